"""Probe fits from passes over a streamed site (:class:`probes.streaming.StreamedActivations`).

Every function fits several probes per layer at once (:class:`FitTargets`: each model's labels
and training records), so that the splits and control arms of a cross-validation share the passes
one fit needs. Per layer group, sized to the memory budget:

- **moments pass** (one pass, chunk-rows in file order): per model the class sums of the
  activations (mean difference) or their sum and sum of squares about a shift (the logistic
  probe's standardisation), accumulated in float64 from float32 block products; meanwhile a
  **record sample** of ``sample_rows`` records, drawn uniformly with the seed, is kept in the
  cache's dtype.
- **mean difference**: the direction is the difference of the class means (exact); its Platt
  scaling (the 1-D logistic fit of ``probes.batched_solvers.platt_scale``) is fitted on the
  sample's projections, which is the in-memory fit whenever the sample holds every record.
- **logistic**: ``epochs`` passes of mini-batch steps on the standardised objective of
  ``probes.batched_solvers.fit_logistic_layers`` (mean log-loss + ``||w||^2 / (2 C n)``): the
  chunk-rows in a seeded random order, pooled ``shuffle_rows`` records at a time and shuffled
  into mini-batches of ``batch_size``; each step is preconditioned by the inverse of the logistic
  curvature at zero on the sample (``E[z z^T] / 4`` with ``z`` the standardised record and a 1
  for the intercept), with a step size decaying from ``learning_rate`` to 0 along a half cosine;
  the result is the mean of the iterates of the last half of the steps.
  Activations are strongly correlated (a few large directions), which leaves plain or
  diagonally scaled steps (Adam) far from the optimum after any affordable number of passes.

A layer's result does not depend on its group: the sample and the mini-batch order come from the
seed alone.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from probes.batched_solvers import platt_scale
from probes.errors import ProbeInputError
from probes.streaming import READ_AHEAD, ActivationBlock, StreamedActivations

PRECONDITIONER_RIDGE = 1e-4
"""Added to the diagonal of the sample curvature before inverting it (a sample may be rank deficient)."""
AVERAGED_FROM = 0.5
"""The logistic fit returns the mean of its iterates after this fraction of its steps (Polyak-Ruppert
averaging: on the benchmark's weakest layer it took the cosine to Newton's direction from 0.9961 to 0.9995)."""
SAMPLE_SLICE_ROWS = 1024
"""Sample records converted to float32 at a time."""


@dataclass(frozen=True)
class StreamingSettings:
    """How a streamed fit runs.

    Attributes:
        memory_budget_mb: activation memory a streamed fit holds at most, in MiB (read-ahead
            buffers, the record sample, the shuffle pool, the preconditioners); the layers are
            fitted in as few groups as fit in it.
        epochs: passes of mini-batch steps of the logistic probe (after its moments pass).
        batch_size: records per mini-batch step.
        learning_rate: step size of the first preconditioned step (1 would be a Newton step at 0).
        sample_rows: records kept during the moments pass (uniform, seeded).
        shuffle_rows: records, in whole chunk-rows drawn at random, pooled and shuffled into
            mini-batches.
        seed: seed of the sample and of the mini-batch order.
    """

    memory_budget_mb: float = 512.0
    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 0.1
    sample_rows: int = 8192
    shuffle_rows: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "sample_rows", "shuffle_rows"):
            if getattr(self, name) < 1:
                raise ProbeInputError(f"StreamingSettings.{name}={getattr(self, name)} must be at least 1")
        if not (self.memory_budget_mb > 0 and self.learning_rate > 0) or self.seed < 0:
            raise ProbeInputError(
                f"StreamingSettings: memory_budget_mb={self.memory_budget_mb} and learning_rate={self.learning_rate} "
                f"must be > 0, seed={self.seed} >= 0"
            )


@dataclass(frozen=True, eq=False)
class FitTargets:
    """The probes fitted together on one view: model ``m`` trains on the records where ``train[m]``.

    Attributes:
        labels: [models, n] in {0, 1} (float32).
        train: [models, n] bool.
    """

    labels: np.ndarray
    train: np.ndarray

    @classmethod
    def everyone(cls, labels: np.ndarray) -> FitTargets:
        """One model trained on every record with ``labels`` [n]."""
        encoded = np.asarray(labels, dtype=np.float32)[None]
        return cls(encoded, np.ones(encoded.shape, dtype=bool))

    @property
    def models(self) -> int:
        """Number of models."""
        return int(self.labels.shape[0])

    def counts(self) -> np.ndarray:
        """[models, 2] training records of class 0 and of class 1."""
        positive = (self.train & (self.labels > 0.5)).sum(axis=1)
        return np.stack([self.train.sum(axis=1) - positive, positive], axis=1)


@dataclass(frozen=True, eq=False)
class FixedDirections:
    """Fixed directions Platt-scaled on the record sample during a streamed fit (the random-direction
    control arm), so that they need no pass of their own.

    Attributes:
        directions: [models, layers, width] float64.
        targets: each direction's labels and training records.
    """

    directions: torch.Tensor
    targets: FitTargets


@dataclass(frozen=True)
class StreamReadouts:
    """Per model and layer linear readouts in raw activation units.

    Attributes:
        coef: [models, layers, width] float64 weights (logits per activation unit); the models of
            the fit's targets, then those of its fixed directions.
        intercept: [models, layers] float64 biases (logits).
        passes: passes over the view the fit read.
    """

    coef: np.ndarray
    intercept: np.ndarray
    passes: int


@dataclass
class _Moments:
    """What one moments pass over a layer group gathered ([G] = the group's layers)."""

    class_sums: torch.Tensor | None  # [G, models, 2, width] float64
    shift: torch.Tensor | None  # [G, width] float32
    sums: torch.Tensor | None  # [G, models, width] float64, about shift
    squares: torch.Tensor | None  # [G, models, width] float64, about shift
    sample: torch.Tensor  # [G, s, width] in the cache's dtype, on the CPU (a view of [s, G, width], filled by records)


def record_sample(n: int, settings: StreamingSettings) -> np.ndarray:
    """Sorted view positions of the record sample: ``min(n, sample_rows)`` drawn without replacement."""
    if settings.sample_rows >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([settings.seed, 0]).choice(n, settings.sample_rows, replace=False))


def layer_bytes(view: StreamedActivations, settings: StreamingSettings, models: int, logistic: bool) -> int:
    """Bytes one layer of a streamed fit of ``models`` probes holds (what the groups are sized by)."""
    width, itemsize = view.width, view.storage_dtype.itemsize
    held = (READ_AHEAD + 2) * view.layer_bytes() + 2 * models * width * 4
    held += min(view.n, settings.sample_rows) * width * itemsize + SAMPLE_SLICE_ROWS * width * 4
    held += 4 * models * width * 8
    if logistic:
        held += (settings.shuffle_rows + view.chunk_rows) * width * itemsize + 3 * settings.batch_size * width * 4
        held += (width + 1) ** 2 * 28 + 8 * models * (width + 1) * 4
    return held


def layer_groups(view: StreamedActivations, per_layer_bytes: int, settings: StreamingSettings) -> list[tuple[int, ...]]:
    """The view's layers in the fewest nearly equal consecutive groups whose fits fit the budget."""
    per_group = max(1, int(settings.memory_budget_mb * 2**20) // max(per_layer_bytes, 1))
    count = math.ceil(len(view.layers) / per_group)
    return [tuple(int(layer) for layer in part) for part in np.array_split(np.array(view.layers), count)]


def _moments_pass(
    view: StreamedActivations,
    targets: FitTargets,
    sample_positions: np.ndarray,
    *,
    spread: bool,
    device: torch.device,
) -> _Moments:
    """One pass: class sums (``spread`` False) or sums and squares about a shift (``spread`` True),
    and the record sample. Each layer of a chunk-row (``chunk_bytes`` of float16, about 1 MiB) is
    converted to float32 into one reused tile and multiplied by the models' weights while it is in
    the processor's cache; the per chunk-row products are added in float64."""
    n_layers, models, width = len(view.layers), targets.models, view.width
    rows = models if spread else 2 * models
    sums = torch.zeros(n_layers, rows, width, dtype=torch.float64, device=device)
    squares = torch.zeros(n_layers, rows, width, dtype=torch.float64, device=device) if spread else None
    shift = torch.zeros(n_layers, width, device=device) if spread else None
    stored = np.float16 if view.storage_dtype == torch.float16 else np.float32
    sample = np.empty((len(sample_positions), n_layers, width), dtype=stored)
    slot = np.full(view.n, -1, dtype=np.int64)
    slot[sample_positions] = np.arange(len(sample_positions))
    tile = torch.empty(view.chunk_rows, width, device=device)
    block_sums = torch.empty(n_layers, rows, width, device=device)
    block_squares = torch.empty_like(block_sums)
    first = True
    for block in view.blocks():
        train = torch.from_numpy(targets.train[:, block.positions]).to(device, torch.float32)
        if spread:
            weights = train
        else:
            labels = torch.from_numpy(targets.labels[:, block.positions]).to(device)
            weights = torch.cat([train * (1 - labels), train * labels])
        values = tile[: len(block.positions)]
        for index in range(n_layers):
            values.copy_(block.values[index])
            if shift is not None:
                if first:
                    shift[index] = values.mean(dim=0)
                values -= shift[index]
                torch.matmul(weights, values.square(), out=block_squares[index])
            torch.matmul(weights, values, out=block_sums[index])
        first = False
        view.check_finite(block, block_sums)
        sums += block_sums
        if squares is not None:
            squares += block_squares
        picked = slot[block.positions]
        kept = picked >= 0
        if kept.any():
            sample[picked[kept]] = block.values.numpy()[:, kept].transpose(1, 0, 2)
    return _Moments(
        class_sums=None if spread else sums.view(n_layers, 2, models, width).transpose(1, 2),
        shift=shift,
        sums=sums if spread else None,
        squares=squares,
        sample=torch.from_numpy(sample).transpose(0, 1),
    )


def _sample_projections(sample: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """[G, s, models] projections of the sample [G, s, width] on ``directions`` [G, models, width], converted
    to the directions' dtype a slice of one layer at a time."""
    projections = directions.new_empty(sample.shape[0], sample.shape[1], directions.shape[1])
    tile = directions.new_empty(min(SAMPLE_SLICE_ROWS, sample.shape[1]), sample.shape[2])
    for layer in range(sample.shape[0]):
        for start in range(0, sample.shape[1], SAMPLE_SLICE_ROWS):
            part = tile[: min(SAMPLE_SLICE_ROWS, sample.shape[1] - start)]
            part.copy_(sample[layer, start : start + SAMPLE_SLICE_ROWS])
            torch.matmul(part, directions[layer].T, out=projections[layer, start : start + len(part)])
    return projections


def sample_platt(
    sample: torch.Tensor,
    sample_positions: np.ndarray,
    directions: torch.Tensor,
    targets: FitTargets,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Platt scaling of each model's fixed directions on its training records of the sample.

    Args:
        sample: [G, s, width] the record sample; sample_positions: [s] its view positions.
        directions: [G, models, width] (float32 or float64: the projections' precision).

    Returns:
        coef [G, models, width] and intercept [G, models] in the dtype of ``directions``.

    Raises:
        ProbeInputError: a model's sampled training records hold one class only.
    """
    projections = _sample_projections(sample, directions)
    coef, intercept = torch.empty_like(directions), directions.new_empty(directions.shape[:2])
    for model in range(targets.models):
        kept = targets.train[model, sample_positions]
        labels = targets.labels[model, sample_positions][kept]
        if np.unique(labels).size < 2:
            raise ProbeInputError(
                f"the record sample holds {int(kept.sum())} training record(s) of one class for probe {model}; "
                "raise StreamingSettings.sample_rows"
            )
        readouts = platt_scale(
            projections[:, torch.from_numpy(np.flatnonzero(kept)), model],
            directions[:, model],
            torch.from_numpy(labels).to(directions.device),
        )
        coef[:, model], intercept[:, model] = readouts.coef, readouts.intercept
    return coef, intercept


class _Readouts:
    """Per model and layer readouts filled in group by group ([models, layers, ...] float64)."""

    def __init__(self, view: StreamedActivations, targets: FitTargets, fixed: FixedDirections | None) -> None:
        models = targets.models + (fixed.targets.models if fixed is not None else 0)
        self.fixed = fixed
        self.coef = np.empty((models, len(view.layers), view.width))
        self.intercept = np.empty((models, len(view.layers)))
        self.start = 0

    def add(self, coef: torch.Tensor, intercept: torch.Tensor, sample: torch.Tensor, positions: np.ndarray) -> None:
        """One group's fits, coef [G, models, width] and intercept [G, models], then its fixed
        directions Platt-scaled on the group's ``sample`` (view ``positions``)."""
        layers = slice(self.start, self.start + coef.shape[0])
        fitted = coef.shape[1]
        self.coef[:fitted, layers] = coef.transpose(0, 1).double().cpu().numpy()
        self.intercept[:fitted, layers] = intercept.transpose(0, 1).double().cpu().numpy()
        if self.fixed is not None:
            directions = self.fixed.directions[:, layers].transpose(0, 1).to(sample.device)
            fixed_coef, fixed_intercept = sample_platt(sample, positions, directions, self.fixed.targets)
            self.coef[fitted:, layers] = fixed_coef.transpose(0, 1).double().cpu().numpy()
            self.intercept[fitted:, layers] = fixed_intercept.transpose(0, 1).double().cpu().numpy()
        self.start = layers.stop


def fit_mean_difference_stream(
    view: StreamedActivations,
    targets: FitTargets,
    settings: StreamingSettings,
    device: torch.device,
    fixed: FixedDirections | None = None,
) -> StreamReadouts:
    """Difference of class means per model and layer (one pass), Platt-scaled on the record sample.

    Raises:
        NonFiniteActivationsError: NaN or inf activations.
    """
    counts = torch.from_numpy(targets.counts()).to(device, torch.float64)
    if bool((counts == 0).any()):
        raise ProbeInputError("a streamed mean-difference fit needs both classes among every model's training records")
    sample_positions = record_sample(view.n, settings)
    readouts = _Readouts(view, targets, fixed)
    for group in layer_groups(view, layer_bytes(view, settings, targets.models, logistic=False), settings):
        moments = _moments_pass(view.with_layers(group), targets, sample_positions, spread=False, device=device)
        assert moments.class_sums is not None
        means = moments.class_sums / counts[None, :, :, None]
        directions = (means[:, :, 1] - means[:, :, 0]).float()
        coef, intercept = sample_platt(moments.sample, sample_positions, directions, targets)
        readouts.add(coef, intercept, moments.sample, sample_positions)
    return StreamReadouts(readouts.coef, readouts.intercept, passes=1)


def class_mean(view: StreamedActivations, labels: np.ndarray, settings: StreamingSettings) -> np.ndarray:
    """[layers, width] float32 mean of the records labelled 1 (one pass per layer group)."""
    targets = FitTargets.everyone(labels)
    count = float(targets.counts()[0, 1])
    parts = []
    for group in layer_groups(view, layer_bytes(view, settings, 1, logistic=False), settings):
        moments = _moments_pass(
            view.with_layers(group), targets, np.arange(0), spread=False, device=torch.device("cpu")
        )
        assert moments.class_sums is not None
        parts.append((moments.class_sums[:, 0, 1] / count).float().numpy())
    return np.concatenate(parts)


def _epoch_windows(view: StreamedActivations, settings: StreamingSettings) -> list[list[int]]:
    """Every epoch's chunk-rows in a seeded random order, cut into pools of at least ``shuffle_rows`` records."""
    rng = np.random.default_rng([settings.seed, 1])
    sizes = view.chunk_sizes()
    windows: list[list[int]] = []
    for _ in range(settings.epochs):
        current: list[int] = []
        held = 0
        for chunk in rng.permutation(view.n_chunks):
            current.append(int(chunk))
            held += int(sizes[chunk])
            if held >= settings.shuffle_rows:
                windows.append(current)
                current, held = [], 0
        if current:
            windows.append(current)
    return windows


def _standardisation(
    moments: _Moments, counts: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per layer and model the training mean and population standard deviation ([G, models, width]
    float64), and the shift [G, width]; a feature with no spread gets scale 1 (as in memory)."""
    assert moments.sums is not None and moments.squares is not None and moments.shift is not None
    n_train = torch.from_numpy(counts.sum(axis=1)).to(device, torch.float64)[None, :, None]
    offset = moments.sums / n_train
    mean = moments.shift.double()[:, None] + offset
    variance = (moments.squares / n_train - offset.square()).clamp(min=0)
    floor = (64 * torch.finfo(torch.float32).eps * mean.abs()).square()
    scale = torch.where(variance > floor, variance.sqrt(), torch.ones_like(variance))
    return mean, scale, moments.shift


def _preconditioner(sample: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor, penalty: float) -> torch.Tensor:
    """[G, width + 1, width + 1] float32 inverse of ``E[z z^T] / 4 + (penalty + ridge) I`` on the sample,
    ``z`` = [standardised record, 1] (standardised as model 0 standardises)."""
    n_layers, rows, width = sample.shape
    device = mean.device
    curvature = torch.zeros(n_layers, width + 1, width + 1, dtype=torch.float64, device=device)
    centre, spread = mean[:, :1].float(), scale[:, :1].float()
    for start in range(0, rows, SAMPLE_SLICE_ROWS):
        part = (sample[:, start : start + SAMPLE_SLICE_ROWS].to(device, torch.float32) - centre) / spread
        augmented = torch.cat([part, torch.ones_like(part[:, :, :1])], dim=2)
        curvature += torch.bmm(augmented.transpose(1, 2), augmented)
    curvature /= 4 * max(rows, 1)
    curvature += (penalty + PRECONDITIONER_RIDGE) * torch.eye(width + 1, dtype=torch.float64, device=device)
    inverse: torch.Tensor = torch.linalg.inv(curvature).float()
    return inverse


@dataclass
class _LogisticSteps:
    """The mini-batch state of one layer group's logistic fits ([G] layers x models)."""

    theta: torch.Tensor  # [G, models, width + 1] standardised weights and intercept
    mean: torch.Tensor  # [G, models, width] float64 training means
    scale: torch.Tensor  # [G, models, width] float64 training standard deviations
    shift: torch.Tensor  # [G, width] float32 subtracted before the products
    inverse: torch.Tensor  # [G, width + 1, width + 1] preconditioner
    penalty: torch.Tensor  # [models] float32 ``1 / (C n_train)``

    def __post_init__(self) -> None:
        self.offset = (self.mean - self.shift.double()[:, None]).float()
        self.scale32 = self.scale.float()

    def step(self, values: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, size: float) -> None:
        """One preconditioned step on a mini-batch.

        Args:
            values: [G, b, width] float32 activations.
            labels: [b, models] in {0, 1}; weight: [b, models] 1 / (the model's training records in
                the batch) where the record trains the model, else 0.
            size: the step size.
        """
        width = values.shape[2]
        centred = values - self.shift[:, None]
        slope = self.theta[..., :width] / self.scale32
        bias = self.theta[..., width] - (self.offset * slope).sum(dim=-1)
        logits = torch.baddbmm(bias[:, None, :], centred, slope.transpose(1, 2))
        residual = (torch.sigmoid(logits) - labels) * weight
        total = residual.sum(dim=1)
        products = torch.bmm(centred.transpose(1, 2), residual).transpose(1, 2)
        gradient = torch.cat(
            [
                (products - self.offset * total[..., None]) / self.scale32
                + self.penalty[:, None] * self.theta[..., :width],
                total[..., None],
            ],
            dim=-1,
        )
        self.theta -= size * torch.matmul(gradient, self.inverse)

    def readouts(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """coef [G, models, width] and intercept [G, models] (float64) in raw activation units of ``theta``."""
        width = self.mean.shape[2]
        coef = theta[..., :width].double() / self.scale
        return coef, theta[..., width].double() - (self.mean * coef).sum(dim=-1)


def _fill_pool(pool: torch.Tensor, blocks: Iterable[ActivationBlock]) -> tuple[torch.Tensor, np.ndarray]:
    """Copy ``blocks`` one after another into ``pool`` [G, rows, width]; returns the filled part and
    the records' view positions."""
    held, positions = 0, []
    for block in blocks:
        count = len(block.positions)
        pool[:, held : held + count].copy_(block.values)
        positions.append(block.positions)
        held += count
    return pool[:, :held], np.concatenate(positions)


def fit_logistic_stream(
    view: StreamedActivations,
    targets: FitTargets,
    *,
    C: float,
    settings: StreamingSettings,
    device: torch.device,
    fixed: FixedDirections | None = None,
) -> StreamReadouts:
    """L2-regularised logistic regression per model and layer by preconditioned mini-batch steps.

    The objective is :func:`probes.batched_solvers.fit_logistic_layers`'s per model (on its own
    training records' standardisation); the solver departs from it: ``epochs`` passes of
    mini-batch steps instead of Newton iterations to convergence (see the module docstring).

    Raises:
        NonFiniteActivationsError: NaN or inf activations.
    """
    counts = targets.counts()
    penalty = torch.from_numpy(1.0 / (C * counts.sum(axis=1))).to(device, torch.float32)
    sample_positions = record_sample(view.n, settings)
    windows = _epoch_windows(view, settings)
    sizes = view.chunk_sizes()
    batches = [math.ceil(int(sizes[window].sum()) / settings.batch_size) for window in windows]
    total = sum(batches)
    labels = torch.from_numpy(targets.labels)
    train = torch.from_numpy(targets.train)
    readouts = _Readouts(view, targets, fixed)
    for group in layer_groups(view, layer_bytes(view, settings, targets.models, logistic=True), settings):
        part = view.with_layers(group)
        moments = _moments_pass(part, targets, sample_positions, spread=True, device=device)
        mean, scale, shift = _standardisation(moments, counts, device)
        steps = _LogisticSteps(
            theta=torch.zeros(len(group), targets.models, view.width + 1, device=device),
            mean=mean,
            scale=scale,
            shift=shift,
            inverse=_preconditioner(moments.sample, mean, scale, float(penalty[0])),
            penalty=penalty,
        )
        sample = moments.sample if fixed is not None else moments.sample.new_empty(len(group), 0, view.width)
        del moments  # the sample's memory goes unless fixed directions still need it
        rows_rng = np.random.default_rng([settings.seed, 2])
        chunks = part.blocks(order=[chunk for window in windows for chunk in window])
        average = torch.zeros_like(steps.theta, dtype=torch.float64)
        averaged = 0
        pooled_rows = int(max(sizes[window].sum() for window in windows))
        pool = torch.empty(len(group), pooled_rows, view.width, dtype=part.storage_dtype)
        done = 0
        try:
            for window, n_batches in zip(windows, batches):
                values, positions = _fill_pool(pool, itertools.islice(chunks, len(window)))
                for batch in np.array_split(rows_rng.permutation(len(positions)), n_batches):
                    picked = torch.from_numpy(positions[batch])
                    weight = train[:, picked].T.to(device, torch.float32)
                    size = settings.learning_rate * 0.5 * (1 + math.cos(math.pi * done / total))
                    steps.step(
                        torch.index_select(values, 1, torch.from_numpy(batch)).to(device, torch.float32),
                        labels[:, picked].T.to(device),
                        weight / weight.sum(dim=0).clamp(min=1),
                        size,
                    )
                    done += 1
                    if done > total * AVERAGED_FROM:
                        average += steps.theta
                        averaged += 1
        finally:
            chunks.close()
        readouts.add(*steps.readouts(average / averaged if averaged else steps.theta), sample, sample_positions)
    return StreamReadouts(readouts.coef, readouts.intercept, passes=1 + settings.epochs)


def stream_probabilities(
    view: StreamedActivations,
    coef: np.ndarray,
    intercept: np.ndarray,
    keep: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Positive-class probabilities of readouts on the view's records, in one pass.

    Args:
        coef: [models, layers, width] float64; intercept: [models, layers].
        keep: [models, n] bool: which records' probabilities each model returns (``None``: all).

    Returns:
        Per model [kept records (in view order), layers] float64, ``1 / (1 + exp(-logit))`` with
        the logits computed in float64.

    Raises:
        NonFiniteActivationsError: NaN or inf activations.
    """
    models, n_layers = intercept.shape
    kept = np.ones((models, view.n), dtype=bool) if keep is None else keep
    slots = np.cumsum(kept, axis=1) - 1
    outputs = [np.empty((int(row.sum()), n_layers)) for row in kept]
    weights = torch.from_numpy(np.ascontiguousarray(coef.transpose(1, 2, 0)))  # [layers, width, models]
    for block in view.blocks():
        logits = torch.stack(
            [block.values[layer].double() @ weights[layer] for layer in range(n_layers)]
        )  # [layers, b, models]
        view.check_finite(block, logits)
        values = logits.numpy() + intercept.T[:, None, :]
        for model, output in enumerate(outputs):
            chosen = kept[model, block.positions]
            output[slots[model, block.positions[chosen]]] = 1.0 / (1.0 + np.exp(-values[:, chosen, model].T))
    return outputs
