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
  for the intercept), with a step size decaying from ``StreamingSettings.first_step()`` to 0 along
  a half cosine; the result is the mean of the iterates of the last half of the steps. The random
  directions of a cross-validation's control arm are Platt-scaled on the sample right after the
  moments pass, so that the sample's memory is free before the pool's is taken.
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
from probes.spd_solves import invert_spd
from probes.streaming import READ_AHEAD, ActivationBlock, StreamedActivations, one_intra_op_thread

PRECONDITIONER_RIDGE = 1e-4
"""Added to the diagonal of the sample curvature before inverting it (a sample may be rank deficient)."""
AVERAGED_FROM = 0.5
"""The logistic fit returns the mean of its iterates after this fraction of its steps (Polyak-Ruppert
averaging: on the benchmark's weakest layer it took the cosine to Newton's direction from 0.9961 to 0.9995)."""
REFERENCE_BATCH = 1024
"""The batch size at which the first step is ``StreamingSettings.learning_rate``; other batch sizes scale
it in proportion (a batch four times smaller steps four times shorter: its gradient is noisier)."""
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
        batch_size: records per mini-batch step. 1024 (was 256): a quarter of the steps and of
            their preconditioner products, so an epoch of the benchmark's cache took 1.61 CPU s
            instead of 2.43, with the directions as close to Newton's on the benchmark's and the
            unit tests' caches (docs/probes.md, "Measured").
        learning_rate: step size of the first preconditioned step at ``batch_size`` 1024 (1 would be
            a Newton step at 0); see :meth:`first_step` for other batch sizes (256 steps 0.1, as
            before).
        sample_rows: records kept during the moments pass (uniform, seeded).
        shuffle_rows: records, in whole chunk-rows drawn at random, pooled and shuffled into
            mini-batches.
        seed: seed of the sample and of the mini-batch order.
    """

    memory_budget_mb: float = 512.0
    epochs: int = 10
    batch_size: int = 1024
    learning_rate: float = 0.4
    sample_rows: int = 8192
    shuffle_rows: int = 4096
    seed: int = 0

    def first_step(self) -> float:
        """Size of the first preconditioned step: ``learning_rate x batch_size / 1024``, at most 1 (a
        Newton step at zero)."""
        return min(1.0, self.learning_rate * self.batch_size / REFERENCE_BATCH)

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
    sample: torch.Tensor  # [G, s, width] in the cache's dtype, on the CPU, layer-major


def host_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised CPU tensor allocated by numpy: numpy asks the kernel for huge pages on large
    arrays, so first touching the record sample (283 MB at 8,192 x 30 x 576 float16) faults about 140
    pages instead of 69,000 (measured 0.03 s against 0.24 s for ``torch.empty``)."""
    return torch.from_numpy(np.empty(shape, dtype=np.float16 if dtype == torch.float16 else np.float32))


def record_sample(n: int, settings: StreamingSettings) -> np.ndarray:
    """Sorted view positions of the record sample: ``min(n, sample_rows)`` drawn without replacement."""
    if settings.sample_rows >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([settings.seed, 0]).choice(n, settings.sample_rows, replace=False))


def layer_bytes(view: StreamedActivations, settings: StreamingSettings, models: int, logistic: bool) -> int:
    """Bytes one layer of a streamed fit of ``models`` probes holds at most (what the groups are sized by).

    Every pass holds ``READ_AHEAD + 1`` raw chunk-rows. The moments pass adds the record sample and
    the sums; a logistic fit frees the sample before its epochs, which hold the shuffle pool, the
    preconditioner and the iterates instead, so a layer holds the larger of the two. The tiles a
    pass converts one layer at a time into are shared by the layers and not counted.
    """
    width, itemsize = view.width, view.storage_dtype.itemsize
    reading = (READ_AHEAD + 1) * view.layer_bytes()
    moments = min(view.n, settings.sample_rows) * width * itemsize + 8 * models * width * 8
    if not logistic:
        return reading + moments
    moments += (width + 1) ** 2 * 4
    epochs = (settings.shuffle_rows + view.chunk_rows) * width * itemsize + (width + 1) ** 2 * 4
    epochs += 2 * models * width * 8 + 6 * models * (width + 1) * 4
    return reading + max(moments, epochs)


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
    and the record sample.

    Each layer of a chunk-row (``chunk_bytes`` of float16, about 1 MiB) is converted to float32 into
    one reused tile and multiplied by the models' weights ([rows, b], one product for every model and
    class) while it is in the processor's cache; the per chunk-row products are added in float64.
    Converting a whole chunk-row at once instead (one call for every layer) was 6x slower per value:
    its float32 copy (63 MiB at 30 x 576) does not stay in the cache between the conversion and the
    product. The sampled records of a chunk-row are copied, every layer at once, into the sample.
    """
    n_layers, models, width = len(view.layers), targets.models, view.width
    rows = models if spread else 2 * models
    sums = torch.zeros(n_layers, rows, width, dtype=torch.float64, device=device)
    squares = torch.zeros(n_layers, rows, width, dtype=torch.float64, device=device) if spread else None
    shift = torch.zeros(n_layers, width, device=device) if spread else None
    sample = host_empty((n_layers, len(sample_positions), width), view.storage_dtype)
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
        kept = np.flatnonzero(picked >= 0)
        if len(kept):
            _copy_sampled(sample, picked[kept], block.values, kept)
    return _Moments(
        class_sums=None if spread else sums.view(n_layers, 2, models, width).transpose(1, 2),
        shift=shift,
        sums=sums if spread else None,
        squares=squares,
        sample=sample,
    )


def _copy_sampled(sample: torch.Tensor, slots: np.ndarray, values: torch.Tensor, kept: np.ndarray) -> None:
    """Copy records ``kept`` of a block's ``values`` [G, b, width] to the sample's records ``slots``, one
    layer at a time (straight into the sample when the slots are consecutive, as in a view in file order)."""
    source = torch.from_numpy(kept)
    if slots[-1] - slots[0] + 1 == len(slots) and bool((np.diff(slots) == 1).all()):
        for layer in range(values.shape[0]):
            torch.index_select(values[layer], 0, source, out=sample[layer, slots[0] : slots[-1] + 1])
        return
    sample.index_copy_(1, torch.from_numpy(slots), values.index_select(1, source))


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
    """Per model and layer readouts filled in group by group ([models, layers, ...] float64): the fitted
    models, then the fixed directions."""

    def __init__(self, view: StreamedActivations, targets: FitTargets, fixed: FixedDirections | None) -> None:
        models = targets.models + (fixed.targets.models if fixed is not None else 0)
        self.fitted = targets.models
        self.fixed = fixed
        self.coef = np.empty((models, len(view.layers), view.width))
        self.intercept = np.empty((models, len(view.layers)))

    def add(self, layers: slice, coef: torch.Tensor, intercept: torch.Tensor) -> None:
        """One group's fits, coef [G, models, width] and intercept [G, models], at the view's ``layers``."""
        self.coef[: self.fitted, layers] = coef.transpose(0, 1).double().cpu().numpy()
        self.intercept[: self.fitted, layers] = intercept.transpose(0, 1).double().cpu().numpy()

    def add_fixed(self, layers: slice, sample: torch.Tensor, positions: np.ndarray) -> None:
        """The fixed directions of the view's ``layers``, Platt-scaled on their group's ``sample``
        [G, s, width] (view ``positions``); nothing without fixed directions."""
        if self.fixed is None:
            return
        directions = self.fixed.directions[:, layers].transpose(0, 1).to(sample.device)
        coef, intercept = sample_platt(sample, positions, directions, self.fixed.targets)
        self.coef[self.fitted :, layers] = coef.transpose(0, 1).double().cpu().numpy()
        self.intercept[self.fitted :, layers] = intercept.transpose(0, 1).double().cpu().numpy()


def _group_slices(groups: list[tuple[int, ...]]) -> list[slice]:
    """Each group's positions on the view's layers axis."""
    bounds = np.cumsum([0] + [len(group) for group in groups])
    return [slice(int(start), int(stop)) for start, stop in itertools.pairwise(bounds)]


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
    groups = layer_groups(view, layer_bytes(view, settings, targets.models, logistic=False), settings)
    with one_intra_op_thread():
        for group, layers in zip(groups, _group_slices(groups)):
            moments = _moments_pass(view.with_layers(group), targets, sample_positions, spread=False, device=device)
            assert moments.class_sums is not None
            means = moments.class_sums / counts[None, :, :, None]
            directions = (means[:, :, 1] - means[:, :, 0]).float()
            readouts.add(layers, *sample_platt(moments.sample, sample_positions, directions, targets))
            readouts.add_fixed(layers, moments.sample, sample_positions)
    return StreamReadouts(readouts.coef, readouts.intercept, passes=1)


def class_mean(view: StreamedActivations, labels: np.ndarray, settings: StreamingSettings) -> np.ndarray:
    """[layers, width] float32 mean of the records labelled 1 (one pass per layer group)."""
    targets = FitTargets.everyone(labels)
    count = float(targets.counts()[0, 1])
    parts = []
    with one_intra_op_thread():
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
    ``z`` = [standardised record, 1] (standardised as model 0 standardises).

    One layer at a time: its sample is standardised a slice of ``SAMPLE_SLICE_ROWS`` records at a time
    into one tile and its products summed in float32, then inverted in float64."""
    n_layers, rows, width = sample.shape
    device = mean.device
    inverse = torch.empty(n_layers, width + 1, width + 1, device=device)
    identity = torch.eye(width + 1, dtype=torch.float64, device=device)
    tile = torch.ones(min(SAMPLE_SLICE_ROWS, rows), width + 1, device=device)
    curvature = torch.empty(width + 1, width + 1, device=device)
    for layer in range(n_layers):
        centre, spread = mean[layer, 0].float(), scale[layer, 0].float()
        curvature.zero_()
        for start in range(0, rows, SAMPLE_SLICE_ROWS):
            part = tile[: min(SAMPLE_SLICE_ROWS, rows - start)]
            features = part[:, :width]
            features.copy_(sample[layer, start : start + len(part)])
            features.sub_(centre).div_(spread)
            curvature.addmm_(part.T, part)
        system = curvature.double() / (4 * max(rows, 1)) + (penalty + PRECONDITIONER_RIDGE) * identity
        inverse[layer] = invert_spd(system).float()
    return inverse


@dataclass
class _LayerSteps:
    """The mini-batch state of one layer group's logistic fits ([G] layers x models), stepped one layer at
    a time (a layer's products and its preconditioner stay in the processor's cache over a pool's steps)."""

    theta: torch.Tensor  # [G, models, width + 1] standardised weights and intercept
    mean: torch.Tensor  # [G, models, width] float64 training means
    scale: torch.Tensor  # [G, models, width] float64 training standard deviations
    shift: torch.Tensor  # [G, width] float32 subtracted from the activations before the products
    inverse: torch.Tensor  # [G, width + 1, width + 1] preconditioner
    penalty: torch.Tensor  # [models] float32 ``1 / (C n_train)``

    def __post_init__(self) -> None:
        self.inverse_scale = (1 / self.scale).float()
        # offset / scale: the standardised value of a shifted activation is x * inverse_scale - standard_offset
        self.standard_offset = ((self.mean - self.shift.double()[:, None]) / self.scale).float()
        models, width = self.theta.shape[1], self.theta.shape[2] - 1
        self.gradient = self.theta.new_empty(models, width + 1)

    def step(self, layer: int, values: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, size: float) -> None:
        """One preconditioned step of one layer on a mini-batch.

        Args:
            values: [b, width] float32 activations minus ``shift[layer]``.
            labels: [b, models] in {0, 1}; weight: [b, models] 1 / (the model's training records in
                the batch) where the record trains the model, else 0.
            size: the step size.
        """
        theta, gradient = self.theta[layer], self.gradient
        width = values.shape[1]
        slope = theta[:, :width] * self.inverse_scale[layer]
        bias = theta[:, width] - (theta[:, :width] * self.standard_offset[layer]).sum(dim=1)
        residual = torch.addmm(bias, values, slope.T).sigmoid_().sub_(labels).mul_(weight)  # [b, models]
        total = residual.sum(dim=0)
        products = torch.mm(residual.T, values)  # [models, width]
        weights = gradient[:, :width]
        torch.mul(products, self.inverse_scale[layer], out=weights)
        weights.addcmul_(self.standard_offset[layer], total[:, None], value=-1)
        weights.addcmul_(theta[:, :width], self.penalty[:, None])
        gradient[:, width] = total
        theta.addmm_(gradient, self.inverse[layer], alpha=-size)

    def readouts(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """coef [G, models, width] and intercept [G, models] (float64) in raw activation units of ``theta``."""
        width = self.mean.shape[2]
        coef = theta[..., :width].double() / self.scale
        return coef, theta[..., width].double() - (self.mean * coef).sum(dim=-1)


@dataclass(frozen=True)
class _Pool:
    """One pool of records, shuffled, and its mini-batches (the same for every layer).

    Attributes:
        values: [G, rows, width] the records in their shuffled order, in the cache's dtype.
        bounds: [batches + 1] batch ``k`` is records ``bounds[k]:bounds[k + 1]`` of ``values``.
        labels: [rows, models] float32 labels in shuffled order.
        weight: [rows, models] float32 ``1 / (the model's training records in the batch)`` where the
            record trains the model, else 0.
    """

    values: torch.Tensor
    bounds: np.ndarray
    labels: torch.Tensor
    weight: torch.Tensor


def _fill_pool(
    pool: torch.Tensor,
    blocks: Iterable[ActivationBlock],
    rows: int,
    n_batches: int,
    targets: FitTargets,
    rng: np.random.Generator,
    device: torch.device,
) -> _Pool:
    """Shuffle the ``rows`` records of ``blocks`` into ``pool`` [G, >= rows, width] (a seeded permutation,
    applied while copying, one layer at a time) and cut them into ``n_batches`` nearly equal batches
    (``np.array_split``)."""
    order = rng.permutation(rows)
    destination = np.argsort(order)
    target = pool.numpy()  # numpy's row scatter: 5x faster than torch's index_copy_ on float16 (measured)
    held, positions = 0, []
    for block in blocks:
        count = len(block.positions)
        slots, values = destination[held : held + count], block.values.numpy()
        for layer in range(pool.shape[0]):
            target[layer][slots] = values[layer]
        positions.append(block.positions)
        held += count
    sizes = [len(part) for part in np.array_split(order, n_batches)]
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    picked = np.concatenate(positions)[order]
    train = targets.train[:, picked].T.astype(np.float32)
    counts = np.add.reduceat(train, bounds[:-1], axis=0)
    return _Pool(
        values=pool[:, :rows],
        bounds=bounds,
        labels=torch.from_numpy(np.ascontiguousarray(targets.labels[:, picked].T)).to(device),
        weight=torch.from_numpy(train / np.repeat(np.maximum(counts, 1), sizes, axis=0)).to(device),
    )


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

    Each pool of records (``shuffle_rows``, whole chunk-rows in the epoch's order) is shuffled as it
    is copied in; then one layer at a time the pool is converted to float32 into one tile and all of
    the pool's steps of that layer are taken on consecutive slices of it, so that the layer's records
    and preconditioner stay in the processor's cache over those steps. No layer's steps depend on
    another's: this is the same fit as stepping every layer on each mini-batch in turn.

    Raises:
        NonFiniteActivationsError: NaN or inf activations.
    """
    counts = targets.counts()
    penalty = torch.from_numpy(1.0 / (C * counts.sum(axis=1))).to(device, torch.float32)
    sample_positions = record_sample(view.n, settings)
    schedule = _Schedule.of(view, settings)
    readouts = _Readouts(view, targets, fixed)
    groups = layer_groups(view, layer_bytes(view, settings, targets.models, logistic=True), settings)
    with one_intra_op_thread():
        for group, layers in zip(groups, _group_slices(groups)):
            part = view.with_layers(group)
            moments = _moments_pass(part, targets, sample_positions, spread=True, device=device)
            mean, scale, shift = _standardisation(moments, counts, device)
            steps = _LayerSteps(
                theta=torch.zeros(len(group), targets.models, view.width + 1, device=device),
                mean=mean,
                scale=scale,
                shift=shift,
                inverse=_preconditioner(moments.sample, mean, scale, float(penalty[0])),
                penalty=penalty,
            )
            readouts.add_fixed(layers, moments.sample, sample_positions)
            del moments  # the sample's memory goes before the pool's comes
            average = _run_epochs(part, steps, schedule, targets, np.random.default_rng([settings.seed, 2]))
            readouts.add(layers, *steps.readouts(average if schedule.averaged.any() else steps.theta))
    return StreamReadouts(readouts.coef, readouts.intercept, passes=1 + settings.epochs)


@dataclass(frozen=True)
class _Schedule:
    """The mini-batch plan of a streamed logistic fit, the same for every layer group.

    Attributes:
        windows: each pool's chunk-rows (every epoch's, in reading order).
        sizes: [n_chunks] records of the view in each chunk-row.
        batches: mini-batches per pool.
        step_sizes: [steps] the step size of every step (half-cosine decay from ``learning_rate``).
        averaged: [steps] whether the step's iterate enters the returned mean.
        pooled_rows: the most records a pool holds.
    """

    windows: list[list[int]]
    sizes: np.ndarray
    batches: list[int]
    step_sizes: np.ndarray
    averaged: np.ndarray
    pooled_rows: int

    @classmethod
    def of(cls, view: StreamedActivations, settings: StreamingSettings) -> _Schedule:
        """The plan of ``settings`` on ``view``'s chunk-rows."""
        windows = _epoch_windows(view, settings)
        sizes = view.chunk_sizes()
        batches = [math.ceil(int(sizes[window].sum()) / settings.batch_size) for window in windows]
        total = sum(batches)
        return cls(
            windows=windows,
            sizes=sizes,
            batches=batches,
            step_sizes=settings.first_step() * 0.5 * (1 + np.cos(np.pi * np.arange(total) / total)),
            averaged=np.arange(1, total + 1) > total * AVERAGED_FROM,
            pooled_rows=int(max(sizes[window].sum() for window in windows)),
        )


def _run_epochs(
    part: StreamedActivations,
    steps: _LayerSteps,
    schedule: _Schedule,
    targets: FitTargets,
    rows_rng: np.random.Generator,
) -> torch.Tensor:
    """Every epoch's steps of one layer group; returns the mean of the averaged steps' iterates
    [G, models, width + 1] (float64)."""
    device = steps.theta.device
    average = torch.zeros_like(steps.theta, dtype=torch.float64)
    pool = host_empty((len(part.layers), schedule.pooled_rows, part.width), part.storage_dtype)
    tile = torch.empty(schedule.pooled_rows, part.width, device=device)
    done = 0
    chunks = part.blocks(order=[chunk for window in schedule.windows for chunk in window])
    try:
        for window, n_batches in zip(schedule.windows, schedule.batches):
            rows = int(schedule.sizes[window].sum())
            pooled = _fill_pool(pool, itertools.islice(chunks, len(window)), rows, n_batches, targets, rows_rng, device)
            sizes = schedule.step_sizes[done : done + n_batches]
            kept = schedule.averaged[done : done + n_batches]
            records = tile[:rows]
            for layer in range(len(part.layers)):
                records.copy_(pooled.values[layer])
                records -= steps.shift[layer]
                for batch in range(n_batches):
                    start, stop = int(pooled.bounds[batch]), int(pooled.bounds[batch + 1])
                    steps.step(
                        layer,
                        records[start:stop],
                        pooled.labels[start:stop],
                        pooled.weight[start:stop],
                        float(sizes[batch]),
                    )
                    if kept[batch]:
                        average[layer] += steps.theta[layer]
            done += n_batches
    finally:
        chunks.close()
    return average / max(int(schedule.averaged.sum()), 1)


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
    with one_intra_op_thread():
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
