"""TOML tables <-> frozen configuration dataclasses, with errors that name the table and the fix.

Every stage's configuration (``[model]``, ``[task]``, ``[probe]``, ``[bias]``, ...) is a frozen
dataclass built by :func:`dataclass_from_table` and written back by :func:`dataclass_to_table`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

Config = TypeVar("Config")


class ConfigTableError(ValueError):
    """A configuration table with an unknown key or a value its dataclass refuses."""


def dataclass_from_table(
    cls: type[Config], table: dict[str, Any], section: str, error: type[ValueError] = ConfigTableError
) -> Config:
    """Build ``cls`` from a TOML table: unknown keys are rejected naming the valid ones, lists become tuples.

    Args:
        cls: a dataclass.
        table: the parsed TOML table.
        section: the table's name for messages (``"probe"`` -> ``[probe] has unknown key(s) ...``).
        error: the exception class raised (a ``ValueError`` subclass of the calling package).
    """
    if not isinstance(table, dict):
        raise error(f"[{section}] must be a table, got {type(table).__name__}")
    valid = [item.name for item in dataclasses.fields(cls)]
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise error(f"[{section}] has unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in table.items()}
    try:
        return cls(**values)
    except error:
        raise
    except (TypeError, ValueError) as problem:
        raise error(f"[{section}] {problem}") from None


def dataclass_to_table(config: Any) -> dict[str, Any]:
    """A TOML-writable table: nested dataclasses become tables, tuples lists; ``None`` is left out."""
    table: dict[str, Any] = {}
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if value is None:
            continue
        if dataclasses.is_dataclass(value):
            value = dataclass_to_table(value)
        elif isinstance(value, tuple):
            value = list(value)
        table[item.name] = value
    return table
