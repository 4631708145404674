"""Task names -> loaders, and the ``[task]`` configuration table that selects one.

Tasks: ``"bbq"`` (folder with ``data/<Category>.jsonl``), ``"bbq-sample"`` (the embedded sample,
no path), ``"winogender"`` (folder with ``templates.tsv``), ``"realtoxicity"`` (a ``.jsonl`` file or
folder), ``"image-questions"`` (a folder with ``questions.jsonl`` and its images, for
vision-language models: :mod:`workbench.tasks.image_questions`). What ``categories`` and
``limit_per_category`` mean per task:

| task | categories | context_conditions / polarities | limit_per_category |
|---|---|---|---|
| bbq, bbq-sample | BBQ categories | yes | per BBQ category |
| winogender | occupations | no | no |
| realtoxicity | file stems (subsets), e.g. ``toxic`` | no | per file |
| image-questions | the lines' ``category`` | no | per category |
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, cast

from workbench.config_tables import dataclass_from_table
from workbench.tasks.bbq import (
    CONTEXT_CONDITIONS,
    QUESTION_POLARITIES,
    load_bbq,
    load_embedded_bbq_sample,
)
from workbench.tasks.image_questions import load_image_questions
from workbench.tasks.items import Item
from workbench.tasks.jsonl_lines import ON_ERROR_CHOICES, OnError
from workbench.tasks.realtoxicity import load_realtoxicity
from workbench.tasks.subsampling import check_limit
from workbench.tasks.winogender import load_winogender

TASK_NAMES: tuple[str, ...] = ("bbq", "bbq-sample", "winogender", "realtoxicity", "image-questions")
_SUPPORTED_FILTERS: dict[str, frozenset[str]] = {
    "bbq": frozenset({"categories", "context_conditions", "polarities", "limit_per_category", "seed", "on_error"}),
    "bbq-sample": frozenset({"categories", "context_conditions", "polarities", "limit_per_category", "seed"}),
    "winogender": frozenset({"categories", "on_error"}),
    "realtoxicity": frozenset({"categories", "limit_per_category", "seed", "on_error"}),
    "image-questions": frozenset({"categories", "limit_per_category", "seed", "on_error"}),
}


_EXAMPLE_PATHS: dict[str, str] = {
    "bbq": "shared/data/bbq",
    "winogender": "shared/data/winogender",
    "realtoxicity": "shared/data/real_toxicity_prompts",
    "image-questions": "my-images",
}


_FILTER_FIELDS: tuple[str, ...] = (
    "categories",
    "context_conditions",
    "polarities",
    "limit_per_category",
    "seed",
)


class TaskConfigError(ValueError):
    """A ``[task]`` table or ``load_task`` call with an unknown key, task or value."""


@dataclass(frozen=True)
class TaskConfig:
    """Which task to load and which of its items to keep.

    Attributes:
        name: one of ``TASK_NAMES``.
        path: dataset file or folder; ``None`` only for ``"bbq-sample"``.
        categories: categories to keep (meaning per task: module docstring); ``None`` = all.
        context_conditions: BBQ ``"ambig"`` / ``"disambig"``; ``None`` = both.
        polarities: BBQ ``"neg"`` / ``"nonneg"``; ``None`` = both.
        limit_per_category: keep at most this many items per category (first N, or a seeded sample).
        seed: seed for that sample; ``None`` = take the first N.
        on_error: ``"raise"`` or ``"skip"`` malformed lines (skips are warned with ``file:line``).
    """

    name: str
    path: str | None = None
    categories: tuple[str, ...] | None = None
    context_conditions: tuple[str, ...] | None = None
    polarities: tuple[str, ...] | None = None
    limit_per_category: int | None = None
    seed: int | None = None
    on_error: str = "raise"

    def __post_init__(self) -> None:
        if self.name not in TASK_NAMES:
            raise TaskConfigError(f"unknown task {self.name!r}; valid tasks: {', '.join(TASK_NAMES)}")
        for name in ("categories", "context_conditions", "polarities"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,))
            elif value is not None:
                object.__setattr__(self, name, tuple(value))
        if self.path is not None:
            object.__setattr__(self, "path", str(self.path))
        _check_subset(self.context_conditions, CONTEXT_CONDITIONS, "context_conditions")
        _check_subset(self.polarities, QUESTION_POLARITIES, "polarities")
        try:
            check_limit(self.limit_per_category)
        except ValueError as error:
            raise TaskConfigError(f"task.limit_per_category: {error}") from None
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise TaskConfigError(f"task.seed={self.seed!r} must be an integer or absent")
        if self.on_error not in ON_ERROR_CHOICES:
            raise TaskConfigError(f"task.on_error={self.on_error!r} must be one of {ON_ERROR_CHOICES}")
        unsupported = [
            name
            for name in _FILTER_FIELDS
            if getattr(self, name) is not None and name not in _SUPPORTED_FILTERS[self.name]
        ]
        if self.on_error != "raise" and "on_error" not in _SUPPORTED_FILTERS[self.name]:
            unsupported.append("on_error")
        if unsupported:
            raise TaskConfigError(
                f"task {self.name!r} does not take {', '.join(unsupported)}; it takes "
                f"{', '.join(sorted(_SUPPORTED_FILTERS[self.name])) or 'no filters'}"
            )
        if self.path is None and self.name != "bbq-sample":
            raise TaskConfigError(
                f"task {self.name!r} needs a path to its data, e.g. path = "
                f'"{_EXAMPLE_PATHS[self.name]}" (or fetch it with workbench.tasks.download)'
            )
        if self.path is not None and self.name == "bbq-sample":
            raise TaskConfigError("task 'bbq-sample' is embedded in the package and takes no path")

    @classmethod
    def from_dict(cls, table: dict[str, Any]) -> TaskConfig:
        """Build from a TOML ``[task]`` table; unknown keys are rejected, naming the valid ones."""
        if "name" not in table:
            raise TaskConfigError(f"[task] needs a name, one of {', '.join(TASK_NAMES)}")
        return dataclass_from_table(cls, table, "task", TaskConfigError)

    def to_dict(self) -> dict[str, Any]:
        """A TOML-writable table: lists for tuples, ``None`` values left out (TOML has no null)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()
            if value is not None
        }


def load_task(name: str, path: str | Path | None = None, **filters: Any) -> list[Item]:
    """Load a task's items by name: ``load_task("bbq", "shared/data/bbq", categories=["Age"])``.

    ``filters`` are the :class:`TaskConfig` fields other than ``name`` and ``path``.
    """
    valid = [field.name for field in fields(TaskConfig)][2:]
    unknown = sorted(set(filters) - set(valid))
    if unknown:
        raise TaskConfigError(f"unknown filter(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    return load_configured_task(TaskConfig(name=name, path=None if path is None else str(path), **filters))


def load_configured_task(config: TaskConfig) -> list[Item]:
    """The items a :class:`TaskConfig` selects."""
    if config.name == "bbq-sample":
        return load_embedded_bbq_sample(
            config.categories,
            config.context_conditions,
            config.polarities,
            config.limit_per_category,
            config.seed,
        )
    assert config.path is not None  # guaranteed by TaskConfig.__post_init__
    on_error = cast(OnError, config.on_error)  # one of ON_ERROR_CHOICES: checked by TaskConfig.__post_init__
    if config.name == "bbq":
        return load_bbq(
            config.path,
            config.categories,
            config.context_conditions,
            config.polarities,
            config.limit_per_category,
            config.seed,
            on_error,
        )
    if config.name == "winogender":
        return load_winogender(config.path, config.categories, on_error=on_error)
    if config.name == "image-questions":
        return load_image_questions(config.path, config.categories, config.limit_per_category, config.seed, on_error)
    return load_realtoxicity(
        config.path,
        config.categories,
        config.limit_per_category,
        config.seed,
        on_error,
    )


def _check_subset(values: tuple[str, ...] | None, valid: tuple[str, ...], name: str) -> None:
    if values is not None and not set(values) <= set(valid):
        wrong = sorted(set(values) - set(valid))
        raise TaskConfigError(f"task.{name}: {', '.join(map(repr, wrong))} not among {valid}")
