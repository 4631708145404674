"""The configuration of a PAC-Bayes training experiment, and the package's one error type.

``PACTrainConfig`` is checked when it is built: every refusal is one line naming the key, the
value and the valid values, raised as :class:`PACTrainError` (a ``ValueError``, so the command
line prints it as a user's error).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from workbench.config_tables import dataclass_from_table

NETWORKS = ("mlp", "cnn")
METHODS = ("pac_bayes", "adam_grid")


class PACTrainError(ValueError):
    """A PAC-Bayes training setting, data size or result that the user has to fix (one line)."""


@dataclass(frozen=True)
class BoundSettings:
    """The constants of the bound and of its K estimate (defaults: the Auto-tune code's).

    Source: the block marked "Copy from Auto-Tune" in ``Avra98/prob_prune`` @ 8fc04fa
    ``utility/prune_pac.py`` (committed by the training paper's first author):
    ``min_gamma = 0.5``, ``max_gamma = 10``, ``min_nu = -6``, ``max_nu = -2.5``, 8 prior scales,
    10 random models per scale, K search started at 1e-3 and grown by x1.1, constant 60.

    Attributes:
        gamma_min / gamma_max: the range [γ1, γ2] the bound holds on; γ is clipped to it (unitless).
        bound_constant: c in the complexity KL + c + 3L (nats).
        prior_log_scale_min / prior_log_scale_max: the K grid ν = exp(linspace(min, max, count))
            of prior standard deviations (natural log of a weight-space std).
        prior_scale_count: number of ν knots.
        k_models: random models w0 + ν N(0, I) drawn per knot.
        k_start / k_growth: the K search starts at ``k_start`` and multiplies by ``k_growth``
            until the moment condition holds.
    """

    gamma_min: float = 0.5
    gamma_max: float = 10.0
    bound_constant: float = 60.0
    prior_log_scale_min: float = -6.0
    prior_log_scale_max: float = -2.5
    prior_scale_count: int = 8
    k_models: int = 10
    k_start: float = 1e-3
    k_growth: float = 1.1

    def __post_init__(self) -> None:
        if not 0 < self.gamma_min <= self.gamma_max:
            raise PACTrainError(
                f"[pactrain.bound] gamma_min = {self.gamma_min}, gamma_max = {self.gamma_max}: "
                "need 0 < gamma_min <= gamma_max"
            )
        if self.bound_constant < 0:
            raise PACTrainError(f"[pactrain.bound] bound_constant = {self.bound_constant} must be >= 0")
        if not self.prior_log_scale_min < self.prior_log_scale_max:
            raise PACTrainError(
                f"[pactrain.bound] prior_log_scale_min = {self.prior_log_scale_min} must be below "
                f"prior_log_scale_max = {self.prior_log_scale_max}"
            )
        if self.prior_scale_count < 2:
            raise PACTrainError(f"[pactrain.bound] prior_scale_count = {self.prior_scale_count} must be >= 2")
        if self.k_models < 1:
            raise PACTrainError(f"[pactrain.bound] k_models = {self.k_models} must be >= 1")
        if self.k_start <= 0 or self.k_growth <= 1:
            raise PACTrainError(
                f"[pactrain.bound] k_start = {self.k_start}, k_growth = {self.k_growth}: need k_start > 0 "
                "and k_growth > 1"
            )


@dataclass(frozen=True)
class PACTrainConfig:
    """PAC-Bayes training from scratch against an Adam grid search, on scikit-learn's digits.

    Attributes:
        networks: which networks to train, from ``NETWORKS`` (``mlp``: 64-W-W-10 ReLU; ``cnn``: two
            3x3 conv layers with 2x2 max-pooling and a linear head).
        methods: from ``METHODS`` (``pac_bayes``: the bound as the training objective; ``adam_grid``:
            Adam with the learning rate and weight decay picked on a validation split).
        seeds: one run per seed; a seed fixes the train/test split, the initial weights and the noise.
        epochs: passes over the training set, the same budget for every method and every grid cell.
        stage1_epochs: PAC-Bayes epochs that learn the noise scales and the prior (stage 1); the
            remaining epochs keep them fixed (stage 2, noisy training loss). ``None``: 4/5 of
            ``epochs`` rounded down (PAC-tuning's 200 of 250).
        batch_size: examples per step (the last batch of an epoch may be smaller).
        train_size: use this many training examples (a stratified subset); ``None``: the whole split.
        test_fraction: share of the 1797 digits held out for testing (stratified).
        validation_fraction: share of the training examples the Adam grid holds out to choose its cell.
        learning_rate: Adam step size of the PAC-Bayes weights w.
        noise_learning_rate: Adam step size of the posterior log-stds p and the prior log-stds b.
        hidden_width: width of the MLP's two hidden layers.
        adam_learning_rates / adam_weight_decays: the Adam grid (weight decay is torch ``Adam``'s
            L2 term, added to the gradient).
        bound_samples: noise draws averaged for the bound's empirical term at the end of training.
        bound: the bound's constants (:class:`BoundSettings`).
    """

    networks: tuple[str, ...] = NETWORKS
    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    epochs: int = 100
    stage1_epochs: int | None = None
    batch_size: int = 128
    train_size: int | None = None
    test_fraction: float = 0.3
    validation_fraction: float = 0.2
    learning_rate: float = 1e-3
    noise_learning_rate: float = 1e-2
    hidden_width: int = 256
    adam_learning_rates: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    adam_weight_decays: tuple[float, ...] = (0.0, 1e-4, 1e-2)
    bound_samples: int = 5
    bound: BoundSettings = BoundSettings()

    def __post_init__(self) -> None:
        _choices("networks", self.networks, NETWORKS)
        _choices("methods", self.methods, METHODS)
        if not self.seeds:
            raise PACTrainError("[pactrain] seeds = () is empty; give at least one integer seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise PACTrainError(f"[pactrain] seeds = {self.seeds} repeats a seed; give distinct integers")
        if any(seed < 0 for seed in self.seeds):
            raise PACTrainError(f"[pactrain] seeds = {self.seeds} has a negative seed; valid seeds are >= 0")
        for key in ("epochs", "batch_size", "hidden_width", "bound_samples"):
            if getattr(self, key) < 1:
                raise PACTrainError(f"[pactrain] {key} = {getattr(self, key)} must be an integer >= 1")
        if self.stage1_epochs is not None and not 0 <= self.stage1_epochs <= self.epochs:
            raise PACTrainError(
                f"[pactrain] stage1_epochs = {self.stage1_epochs} must be between 0 and epochs = {self.epochs}"
            )
        if self.train_size is not None and self.train_size < 20:
            raise PACTrainError(f"[pactrain] train_size = {self.train_size} must be >= 20 (or None for the split)")
        for key in ("test_fraction", "validation_fraction"):
            value = getattr(self, key)
            if not 0 < value < 1:
                raise PACTrainError(f"[pactrain] {key} = {value} must be strictly between 0 and 1")
        for key in ("learning_rate", "noise_learning_rate"):
            if not getattr(self, key) > 0:
                raise PACTrainError(f"[pactrain] {key} = {getattr(self, key)} must be > 0")
        if not self.adam_learning_rates or any(not rate > 0 for rate in self.adam_learning_rates):
            raise PACTrainError(
                f"[pactrain] adam_learning_rates = {self.adam_learning_rates} must be a non-empty list of rates > 0"
            )
        if not self.adam_weight_decays or any(not decay >= 0 for decay in self.adam_weight_decays):
            raise PACTrainError(
                f"[pactrain] adam_weight_decays = {self.adam_weight_decays} must be a non-empty list of values >= 0"
            )

    @property
    def stage1_epoch_count(self) -> int:
        """The number of stage-1 epochs: ``stage1_epochs``, or 4/5 of ``epochs`` when it is ``None``."""
        return self.epochs * 4 // 5 if self.stage1_epochs is None else self.stage1_epochs

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PACTrainConfig:
        """Build from a TOML ``[pactrain]`` table (``[pactrain.bound]`` nested); unknown keys name the valid ones."""
        table = dict(data)
        bound_table = table.pop("bound", {})
        bound = dataclass_from_table(BoundSettings, bound_table, "pactrain.bound", PACTrainError)
        config = dataclass_from_table(cls, table, "pactrain", PACTrainError)
        return dataclasses.replace(config, bound=bound)


def _choices(key: str, values: tuple[str, ...], valid: tuple[str, ...]) -> None:
    """Refuse an empty, repeated or unknown choice in ``values`` naming ``key`` and ``valid``."""
    unknown = [value for value in values if value not in valid]
    if unknown or not values or len(set(values)) != len(values):
        noun = key.removesuffix("s")
        problem = f"has unknown {noun} {unknown[0]!r}" if unknown else "is empty" if not values else "repeats a value"
        raise PACTrainError(f"[pactrain] {key} = {values} {problem}; valid {key}: {', '.join(valid)}")
