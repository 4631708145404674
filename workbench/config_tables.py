"""TOML tables <-> frozen configuration dataclasses, with errors that name the table and the fix.

Every stage's configuration (``[model]``, ``[task]``, ``[probe]``, ``[bias]``, ...) is a frozen
dataclass built by :func:`dataclass_from_table` and written back by :func:`dataclass_to_table`.
Values are checked against the dataclass's type hints before the dataclass sees them, so a
``rounds = "three"`` or ``batch_size = 1.5`` is one line naming the key and the type it needs;
ranges and choices are each dataclass's own ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from typing import Any, Literal, TypeVar, Union, cast

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

    Raises:
        error: an unknown key, a value of the wrong type (``[section] key = value must be ...``),
            or a value the dataclass's own checks refuse.
    """
    if not isinstance(table, dict):
        raise error(f"[{section}] must be a table, got {type(table).__name__}")
    valid = [item.name for item in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise error(f"[{section}] has unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    hints = field_types(cast(type, cls))  # classes hash; mypy checks type[...] against Hashable wrongly
    values: dict[str, Any] = {}
    for key, value in table.items():
        problem = type_problem(value, hints[key])
        if problem is not None:
            raise error(f"[{section}] {key} = {_shown(value)} {problem}")
        values[key] = _tuples(value)
    try:
        return cls(**values)
    except error:
        raise
    except (TypeError, ValueError) as problem:
        raise error(f"[{section}] {problem}") from None


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The resolved type hint of every field of dataclass ``cls``."""
    return typing.get_type_hints(cls)


def type_problem(value: Any, hint: Any) -> str | None:
    """Why ``value`` (as parsed from TOML) does not fit ``hint``, or ``None`` when it does.

    Understood hints: ``str``, ``int`` (not ``bool``), ``float`` (an ``int`` is accepted), ``bool``,
    ``None``, ``Literal[...]``, unions (``X | None``), ``tuple[X, ...]``, ``tuple[X, Y]``,
    ``dict[str, X]`` and ``Any``; a nested dataclass must be a table. Anything else is accepted.
    """
    if hint is Any:
        return None
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if any(type_problem(value, option) is None for option in options):
            return None
        return "must be " + " or ".join(_describe(option) for option in options if option is not type(None))
    if origin is Literal:
        choices = typing.get_args(hint)
        return None if value in choices else "must be one of " + ", ".join(_shown(choice) for choice in choices)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return f"must be {_describe(hint)}"
        args = typing.get_args(hint)
        element_hints = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(element_hints) != len(value):
            return f"must be {_describe(hint)}"
        for element, element_hint in zip(value, element_hints):
            if type_problem(element, element_hint) is not None:
                return f"must be {_describe(hint)}"
        return None
    if origin is dict:
        return None if isinstance(value, dict) else "must be a table"
    if hint is type(None):
        return None if value is None else "must be absent"
    if hint is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else "must be a number"
    if hint is str:
        return None if isinstance(value, str) else "must be a string"
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return None if isinstance(value, dict | hint) else "must be a table"
    return None


def _describe(hint: Any) -> str:
    """``tuple[str, ...]`` -> ``"a list of strings"`` and so on, for messages."""
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    if hint in names:
        return names[hint]
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(_shown(choice) for choice in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(option) for option in typing.get_args(hint) if option is not type(None))
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            element = _describe(args[0]).removeprefix("a ").removeprefix("an ")
            plural = {"true or false": "booleans"}.get(element, element + "s")
            return f"a list of {plural}"
        return f"a list of {len(args)} values ({', '.join(_describe(arg) for arg in args)})"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "a table"
    return getattr(hint, "__name__", str(hint))


def check_field_types(config: Any, section: str, error: type[ValueError] = ConfigTableError) -> None:
    """Raise ``error`` naming the first field of dataclass instance ``config`` whose value misfits its hint.

    For ``__post_init__``: a configuration built in Python gets the checks a TOML table gets.
    """
    hints = field_types(cast(type, type(config)))  # cast: as in dataclass_from_table
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        problem = type_problem(value, hints[item.name])
        if problem is not None:
            raise error(f"[{section}] {item.name} = {_shown(value)} {problem}")


def _shown(value: Any) -> str:
    """The value as TOML would spell it, shortened for a one-line message."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _tuples(value: Any) -> Any:
    """Lists (also nested ones) become tuples, so that frozen dataclasses stay hashable."""
    if isinstance(value, list):
        return tuple(_tuples(element) for element in value)
    return value


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
