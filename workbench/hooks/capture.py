"""One capture API over three backends (``hf``, ``transformer_lens``, ``nnsight``).

>>> cap = capture(model, ["The capital of France is"], sites=["blocks.*.hook_resid_post"])
>>> cap["blocks.3.hook_resid_post"].shape              # [batch, d_model], one site (a Mapping)
>>> cap.get("hook_resid_post", "last_prompt").shape   # [batch, layers, d_model], every layer stacked

Captures are reduced to the requested positions inside the hook, so memory holds
``batch x layers x d`` per site, never ``batch x seq x layers x d`` unless a token-level
position (``answer_all``, ``all``) is asked for.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from workbench.hooks.bridge import bridge_forward, transformer_bridge
from workbench.hooks.interventions import Intervention
from workbench.hooks.module_paths import layout_for
from workbench.hooks.native import native_hooks
from workbench.hooks.nnsight_backend import nnsight_forward, nnsight_model, nnsight_session_forwards
from workbench.hooks.nnsight_remote import RemoteMode, check_remote_ready, remotable_model, ship_workbench_by_value
from workbench.hooks.plan import HookPlan
from workbench.hooks.positions import (
    TOKEN_POSITIONS,
    Position,
    PositionError,
    TokenBatch,
    in_context_continuation,
    is_token_level,
    position_name,
    select_position,
)
from workbench.hooks.sites import Site, SiteKind, parse_sites
from workbench.hooks.vision import check_vision_backend, image_forward_inputs, read_vision_site, vision_processor
from workbench.models.loading import LoadedModel
from workbench.models.vision import ImageInputs

BACKENDS = ("hf", "transformer_lens", "nnsight")


class BackendError(ValueError):
    """An unknown backend name."""


@dataclass
class Capture(Mapping[tuple[str, str], torch.Tensor]):
    """Activations of several sites at several positions for a list of sequences.

    A read-only Mapping, like TransformerLens' ``ActivationCache``, from a site and a position
    to that site's tensor (``B`` = batch, ``T`` = tokens of a token position, padded, see ``masks``):

    - ``cap["blocks.3.hook_resid_post", "last"]``: always; the position is a name or a token
      index (``-2`` and ``"index_-2"`` are the same key). ``[B, d_model]`` at one-token
      positions, ``[B, T, d_model]`` at ``answer_all``/``all``; ``attn.hook_z`` gives
      ``[B, n_heads, d_head]`` (``[B, T, n_heads, d_head]``); ``attn.hook_pattern[h,...]``
      gives ``[B, heads, keys]`` (one-token positions only, see ``patterns``).
    - ``cap["blocks.3.hook_resid_post"]``: the same, when the site was captured at exactly one
      position; otherwise a KeyError that lists the positions to choose from.

    Iteration, ``keys()``, ``items()``, ``values()`` and ``len()`` go over the captured
    ``(site name, position name)`` pairs, sites in layer order, positions in request order.
    A key that was not captured is a KeyError naming what was. ``cap[name, position]``
    equals ``cap.get(kind, position)[:, i]`` (``[:, :, i]`` at token positions) where ``i``
    is the layer's index in ``cap.layers[kind]``.

    Attributes:
        sites: the expanded sites, sorted by layer.
        layers: per site kind, the layers captured (the ``layers`` axis of its tensors).
        stacked: ``(kind, position name) ->`` ``[B, layers, *site]`` for one-vector positions,
            ``[B, T, layers, *site]`` for token positions, where ``site`` is ``[d_model]`` or,
            for hook_z, ``[n_heads, d_head]``.
        masks: ``position name -> [B, T]`` bool, for token positions.
        patterns: ``(site name, position name) -> [B, heads, keys]``: attention
            probabilities of the chosen heads from the position's query token to every key
            token (keys left-aligned to each sequence's first real token, zero-padded).
            Kept at one-token positions only (a full pattern is quadratic in length).
        sequences: token ids of each sequence (prompt then answer), unpadded.
        prompt_lengths: number of prompt tokens of each sequence.
    """

    sites: list[Site]
    layers: dict[SiteKind, list[int]]
    stacked: dict[tuple[SiteKind, str], torch.Tensor] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    patterns: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    sequences: list[list[int]] = field(default_factory=list)
    prompt_lengths: list[int] = field(default_factory=list)

    def get(self, kind: str | SiteKind, position: Position = "last_prompt") -> torch.Tensor:  # type: ignore[override]
        """The stacked tensor of one site kind at one position (a name, an index or ``"index_{i}"``), see ``stacked``.

        Unlike ``Mapping.get`` it takes a site kind (``"hook_resid_post"``) and has no default;
        for one site use ``cap[name, position]``.
        """
        key = (SiteKind(kind) if not isinstance(kind, SiteKind) else kind, _stored_position(position))
        if key not in self.stacked:
            available = ", ".join(f"{k.value}@{p}" for k, p in self.stacked)
            raise KeyError(f"no capture of {key[0].value} at {key[1]}; captured: {available}")
        return self.stacked[key]

    def __getitem__(self, key: str | tuple[str, Position]) -> torch.Tensor:
        site, position = self._resolve(key)
        if site.kind is SiteKind.PATTERN:
            return self.patterns[(site.name, position)]
        stacked = self.stacked[(site.kind, position)]
        index = self.layers[site.kind].index(site.layer)
        return stacked[:, :, index] if position in TOKEN_POSITIONS else stacked[:, index]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((site.name, position) for site in self.sites for position in self._positions(site))

    def __len__(self) -> int:
        return sum(len(self._positions(site)) for site in self.sites)

    def __repr__(self) -> str:
        lines = [f"Capture({len(self.sequences)} sequences, {len(self)} keys"]
        for names, site, positions in self._groups():
            shapes = ", ".join(f"{position} {list(self[site.name, position].shape)}" for position in positions)
            lines.append(f"  {', '.join(names)}: {shapes}")
        return "\n".join(lines) + ")"

    def _positions(self, site: Site) -> list[str]:
        """Names of the positions ``site`` was captured at, in request order."""
        if site.kind is SiteKind.PATTERN:
            return [position for name, position in self.patterns if name == site.name]
        return [position for kind, position in self.stacked if kind is site.kind]

    def _resolve(self, key: object) -> tuple[Site, str]:
        """The site and position name of a Mapping key; KeyError naming what was captured."""
        position: str | None = None
        if isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str) and isinstance(key[1], str | int):
            try:
                name, position = key[0], _stored_position(key[1])
            except PositionError:
                raise KeyError(self._missing(key)) from None
        elif isinstance(key, str):
            name = key
        else:
            raise KeyError(self._missing(key))
        site = next((site for site in self.sites if site.name == name), None)
        if site is None:
            raise KeyError(self._missing(key))
        positions = self._positions(site)
        if position is None:
            if len(positions) != 1:
                raise KeyError(
                    f"{name!r} was captured at {len(positions)} positions ({', '.join(positions)}); "
                    f"pick one, e.g. cap[{name!r}, {positions[0]!r}]"
                    if positions
                    else self._missing(key)
                )
            position = positions[0]
        elif position not in positions:
            raise KeyError(self._missing(key))
        return site, position

    def _groups(self) -> list[tuple[list[str], Site, list[str]]]:
        """Sites sharing kind, heads and positions: their names (layer runs as ``a-b``), one of them, the positions."""
        by_group: dict[tuple[SiteKind, tuple[int, ...] | None, tuple[str, ...]], list[Site]] = {}
        order = list(SiteKind)
        for site in sorted(self.sites, key=lambda site: (order.index(site.kind), site.heads or (), site.layer)):
            by_group.setdefault((site.kind, site.heads, tuple(self._positions(site))), []).append(site)
        groups = []
        for (_, _, positions), members in by_group.items():
            runs: list[list[Site]] = []
            for site in members:
                if runs and runs[-1][-1].layer + 1 == site.layer:
                    runs[-1].append(site)
                else:
                    runs.append([site])
            groups.append(([_run_name(run) for run in runs], members[0], list(positions)))
        return groups

    def _missing(self, key: object) -> str:
        captured = "; ".join(f"{', '.join(names)} at {', '.join(positions)}" for names, _, positions in self._groups())
        return f"no capture {key!r}; captured: {captured or 'nothing'}"


def _stored_position(position: Position) -> str:
    """The stored name of a position, also accepting a stored name (``-2`` and ``"index_-2"`` alike)."""
    if isinstance(position, str) and position.startswith("index_") and position[6:].lstrip("-").isdigit():
        return position
    return position_name(position)


def _run_name(run: list[Site]) -> str:
    """The name of sites at consecutive layers, in the site grammar's range form ``blocks.a-b.<kind>``."""
    first = run[0]
    if len(run) == 1:
        return first.name
    return first.name.replace(f"blocks.{first.layer}.", f"blocks.{first.layer}-{run[-1].layer}.", 1)


def tokenize_prompts(
    model: LoadedModel,
    prompts: Sequence[str],
    answers: Sequence[str] | None = None,
    add_special_tokens: bool = True,
) -> tuple[list[list[int]], list[int]]:
    """Token ids of ``prompt + answer`` pairs and the prompt lengths.

    Each pair is tokenized as one string and split at the prompt's own token count
    (:func:`workbench.hooks.positions.in_context_continuation`), so the answer's tokens are the ones
    the model reads after that prompt, also on SentencePiece tokenizers whose dummy prefix would
    tokenize a lone answer differently. Use ``add_special_tokens=False`` for text that already went
    through a chat template.
    """
    if not prompts:
        raise PositionError("empty prompt list: give at least one prompt")
    if answers is not None and len(answers) != len(prompts):
        raise PositionError(f"{len(prompts)} prompts but {len(answers)} answers; give one answer per prompt")
    tokenizer = model.tokenizer
    sequences, prompt_lengths = [], []
    for index, prompt in enumerate(prompts):
        answer = answers[index] if answers else ""
        prompt_ids, answer_ids = in_context_continuation(
            tokenizer, prompt, answer, add_special_tokens=add_special_tokens
        )
        if not prompt_ids:
            raise PositionError(f"prompt {index} is empty after tokenization; give it some text")
        sequences.append(prompt_ids + answer_ids)
        prompt_lengths.append(len(prompt_ids))
    return sequences, prompt_lengths


def capture(
    model: LoadedModel,
    prompts: Sequence[str],
    *,
    sites: Sequence[str] | str,
    answers: Sequence[str] | None = None,
    positions: Sequence[Position] = ("last_prompt",),
    backend: str = "hf",
    batch_size: int = 8,
    padding_side: str = "left",
    add_special_tokens: bool = True,
    interventions: Sequence[Intervention] = (),
    dtype: torch.dtype = torch.float32,
    remote: RemoteMode = False,
    images: Sequence[ImageInputs | None] | None = None,
) -> Capture:
    """Capture ``sites`` at ``positions`` for each prompt (and its answer, when given).

    Args:
        model: a loaded model.
        prompts: the texts (chat-templated already, if wanted).
        sites: site names, wildcards allowed (``blocks.*.hook_resid_post``).
        answers: optional answer texts appended to the prompts as written (include the leading
            space, e.g. ``" Paris."``); one clean forward over both, the answer's tokens being those
            of the whole string (:func:`tokenize_prompts`).
        positions: which tokens to keep (see :mod:`workbench.hooks.positions`).
        backend: ``"hf"``, ``"transformer_lens"`` or ``"nnsight"``; same tensors from each.
        batch_size: sequences per forward.
        padding_side: ``"left"`` or ``"right"``; results do not depend on it.
        add_special_tokens: let the tokenizer add BOS etc. to the prompt.
        interventions: edits applied during the forward (readers see edited values).
        dtype: dtype of the returned tensors (they are moved to the CPU).
        remote: nnsight backend only: ``True`` runs the call's forwards as one NDIF session,
            ``"local"`` simulates that session here (:mod:`workbench.hooks.nnsight_remote`).
        images: vision-language models: per prompt its image (``model.processor.encode(image)``) or
            ``None``; a prompt with an image holds one placeholder (``model.processor.image_token``),
            expanded here into the image's tokens.
    """
    if images is not None:
        if len(images) != len(prompts):
            raise PositionError(f"{len(prompts)} prompts but {len(images)} images; give one image (or None) per prompt")
        processor = vision_processor(model)
        prompts = [
            prompt if image is None else processor.expand(prompt, image) for prompt, image in zip(prompts, images)
        ]
    sequences, prompt_lengths = tokenize_prompts(model, prompts, answers, add_special_tokens)
    return capture_tokens(
        model,
        sequences,
        prompt_lengths,
        sites=sites,
        positions=positions,
        backend=backend,
        batch_size=batch_size,
        padding_side=padding_side,
        interventions=interventions,
        dtype=dtype,
        remote=remote,
        images=images,
    )


def capture_tokens(
    model: LoadedModel,
    sequences: Sequence[Sequence[int]],
    prompt_lengths: Sequence[int],
    *,
    sites: Sequence[str] | str,
    positions: Sequence[Position] = ("last_prompt",),
    backend: str = "hf",
    batch_size: int = 8,
    padding_side: str = "left",
    interventions: Sequence[Intervention] = (),
    dtype: torch.dtype = torch.float32,
    remote: RemoteMode = False,
    images: Sequence[ImageInputs | None] | None = None,
) -> Capture:
    """:func:`capture` on token ids: ``sequences[i]`` is prompt then answer, split at ``prompt_lengths[i]``.

    ``images[i]`` is the image whose tokens ``sequences[i]`` holds (already expanded), or ``None``.
    """
    check_vision_backend(model, backend)
    if remote and backend != "nnsight":
        raise BackendError(
            f'remote = {remote!r} runs on the nnsight backend only, not {backend!r}; use backend "nnsight"'
        )
    check_remote_ready(remote, model.model_id, model.source)
    arch = model.architecture
    parsed = parse_sites(
        list(sites) if not isinstance(sites, str) else sites, arch.n_layers, arch.n_heads, vision_type=arch.vision_type
    )
    names = [position_name(position) for position in positions]
    if any(site.kind is SiteKind.PATTERN for site in parsed) and all(is_token_level(p) for p in positions):
        raise PositionError("attention patterns are captured at one-token positions only; add e.g. 'last_prompt'")
    if not sequences:
        raise PositionError("empty prompt list: give at least one prompt")
    row_images = list(images) if images is not None else [None] * len(sequences)
    if len(row_images) != len(sequences):
        raise PositionError(f"{len(sequences)} sequences but {len(row_images)} images; give one image (or None) each")
    reads_vision = any(site.kind is SiteKind.VISION_OUT for site in parsed)
    if reads_vision:
        check_vision_positions(positions)
        if any(image is None for image in row_images):
            raise PositionError("vision.hook_out reads each sequence's image; give an image for every sequence")
    layers: dict[SiteKind, list[int]] = defaultdict(list)
    for site in parsed:
        if site.kind is not SiteKind.PATTERN:
            layers[site.kind].append(site.layer)
    result = Capture(
        sites=parsed, layers=dict(layers), sequences=[list(s) for s in sequences], prompt_lengths=list(prompt_lengths)
    )
    value_parts: dict[tuple[SiteKind, str], list[torch.Tensor]] = defaultdict(list)
    pattern_parts: dict[tuple[str, str], list[torch.Tensor]] = defaultdict(list)
    mask_parts: dict[str, list[torch.Tensor]] = defaultdict(list)
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    batches: list[_BatchReads] = []
    for start in range(0, len(sequences), batch_size):
        batch = TokenBatch.from_sequences(
            sequences[start : start + batch_size], prompt_lengths[start : start + batch_size], pad_id, padding_side
        ).to(model.device)
        reads = _BatchReads(batch, HookPlan.for_interventions(interventions, arch.n_layers, arch.n_heads))
        batch_images = row_images[start : start + batch_size]
        reads.image_inputs = image_forward_inputs(model, batch.input_ids, batch_images)
        if reads_vision:
            vision = read_vision_site(model, [image for image in batch_images if image is not None], dtype)
            for name in names:
                reads.per_layer[(SiteKind.VISION_OUT, name)][0] = vision
        for site in parsed:
            for position, name in zip(positions, names):
                if site.kind is SiteKind.VISION_OUT:
                    continue
                if site.kind is not SiteKind.PATTERN:
                    reads.plan.add_reader(
                        site.layer,
                        site.kind,
                        site_reader(site, position, batch, reads.per_layer[(site.kind, name)], dtype),
                    )
                elif not is_token_level(position):  # patterns are kept at one-token positions only
                    reads.plan.add_reader(
                        site.layer,
                        site.kind,
                        _pattern_reader(site, position, batch, reads.patterns, (site.name, name), dtype),
                    )
        batches.append(reads)
        if not remote:  # in-process: one forward per batch, as soon as it is built
            run_forward(model, batch, reads.plan, backend, reads.image_inputs)
    if remote:
        run_remote_forwards(model, [(reads.batch, reads.plan) for reads in batches], remote)
    for reads in batches:
        for (kind, name), by_layer in reads.per_layer.items():
            stacked = torch.stack([by_layer[layer] for layer in layers[kind]], dim=1)
            value_parts[(kind, name)].append(stacked.transpose(1, 2) if name in TOKEN_POSITIONS else stacked)
        for key, pattern in reads.patterns.items():
            pattern_parts[key].append(pattern)
        for position, name in zip(positions, names):
            if is_token_level(position):
                _, mask = select_position(reads.batch.input_ids.unsqueeze(-1), reads.batch, position)
                assert mask is not None  # token-level positions always come with a mask
                mask_parts[name].append(mask.cpu())
    for (kind, name), parts in value_parts.items():
        result.stacked[(kind, name)] = _concat(parts, 1 if name in TOKEN_POSITIONS else None)
    for key, parts in pattern_parts.items():
        result.patterns[key] = _concat(parts, -1)
    for name, parts in mask_parts.items():
        result.masks[name] = _concat(parts, 1)
    return result


@dataclass
class _BatchReads:
    """One batch of a capture call, its plan and where the plan's readers put the values."""

    batch: TokenBatch
    plan: HookPlan
    per_layer: dict[tuple[SiteKind, str], dict[int, torch.Tensor]] = field(default_factory=lambda: defaultdict(dict))
    patterns: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    image_inputs: dict[str, torch.Tensor] = field(default_factory=dict)


def check_vision_positions(positions: Sequence[Position]) -> None:
    """Refuse token-level positions for ``vision.hook_out`` (one vector per image, see :mod:`workbench.hooks.sites`).

    Raises:
        PositionError: ``answer_all`` or ``all`` among ``positions``.
    """
    token_level = [str(position) for position in positions if is_token_level(position)]
    if token_level:
        raise PositionError(
            f"vision.hook_out is one vector per image and has no tokens at position {token_level[0]!r}; "
            "capture it at one-vector positions only (last_prompt, last, answer_mean or a token index)"
        )


def site_reader(
    site: Site, position: Position, batch: TokenBatch, by_layer: dict[int, torch.Tensor], dtype: torch.dtype
) -> Callable[[torch.Tensor], None]:
    """Keep ``position`` of the site's tensor (token-level values stay ``[batch, tokens, ...]``)."""

    def read(activation: torch.Tensor) -> None:
        values, _ = select_position(activation, batch, position)
        by_layer[site.layer] = values.detach().to("cpu", dtype)

    return read


def _pattern_reader(
    site: Site,
    position: Position,
    batch: TokenBatch,
    store: dict[tuple[str, str], torch.Tensor],
    key: tuple[str, str],
    dtype: torch.dtype,
) -> Callable[[torch.Tensor], None]:
    """Keep the chosen heads' attention from ``position``'s query token, keys re-aligned to each sequence."""
    heads = list(site.heads or ())

    def read(pattern: torch.Tensor) -> None:
        chosen = pattern[:, heads].transpose(1, 2)  # [batch, query, heads, key]
        rows, _ = select_position(chosen, batch, position)  # [batch, heads, key]
        keys, _ = select_position(rows.transpose(1, 2), batch, "all")  # [batch, keys, heads]
        store[key] = keys.transpose(1, 2).detach().to("cpu", dtype)

    return read


def _concat(parts: list[torch.Tensor], padded_axis: int | None) -> torch.Tensor:
    if padded_axis is None or len(parts) == 1:
        return torch.cat(parts, dim=0)
    width = max(part.shape[padded_axis] for part in parts)
    padded = []
    for part in parts:
        missing = width - part.shape[padded_axis]
        if missing:
            shape = list(part.shape)
            shape[padded_axis] = missing
            part = torch.cat([part, part.new_zeros(shape)], dim=padded_axis)
        padded.append(part)
    return torch.cat(padded, dim=0)


def run_forward(
    model: LoadedModel,
    batch: TokenBatch,
    plan: HookPlan,
    backend: str = "hf",
    image_inputs: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """One forward of ``batch`` through ``backend`` with ``plan`` applied; logits ``[batch, seq, vocab]``.

    ``image_inputs``: a vision-language model's pixel arguments for the batch
    (:func:`workbench.hooks.vision.image_forward_inputs`); ``hf`` backend only.
    """
    check_vision_backend(model, backend)
    arch = model.architecture
    layout = layout_for(arch.model_type, arch.vision_type)
    n_heads = arch.n_heads
    with torch.inference_mode():
        if backend == "hf":
            with native_hooks(model.model, layout, n_heads, plan):
                logits: torch.Tensor = model.model(
                    input_ids=batch.input_ids,
                    attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids,
                    use_cache=False,
                    **(image_inputs or {}),
                ).logits
                return logits
        if backend == "transformer_lens":
            bridge = transformer_bridge(model.model, model.tokenizer, model.model_id)
            return bridge_forward(bridge, batch, plan)
        if backend == "nnsight":
            return nnsight_forward(nnsight_model(model.model), model.model, layout, n_heads, batch, plan)
    raise BackendError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")


def run_remote_forwards(
    model: LoadedModel, work: Sequence[tuple[TokenBatch, HookPlan]], remote: RemoteMode
) -> list[torch.Tensor]:
    """The forwards of ``work`` as one nnsight session (``remote``: ``True`` for NDIF, ``"local"`` simulated);
    the plans' readers run after the session, on its saved values; logits ``[batch, seq, vocab]`` per batch."""
    check_remote_ready(remote, model.model_id, model.source)
    check_vision_backend(model, "nnsight")
    ship_workbench_by_value()
    wrapper = remotable_model(model.model, model.tokenizer)
    layout = layout_for(model.architecture.model_type)
    with torch.inference_mode():
        return nnsight_session_forwards(wrapper, model.model, layout, model.architecture.n_heads, work, remote)


@contextmanager
def intervene(model: LoadedModel, interventions: Sequence[Intervention]) -> Iterator[None]:
    """Apply ``interventions`` (native hooks) to every forward and ``generate`` call inside the block.

    >>> with intervene(model, [Intervention("blocks.12.hook_resid_post", "add", value=direction)]):
    ...     model.model.generate(**inputs)

    Positions of an intervention index the sequence axis *of each forward call*; under
    ``generate`` with a KV cache each step sees one token, so steer with ``positions=None``.
    The hooks are removed on exit, also when the block raises.
    """
    arch = model.architecture
    with hooked(model, HookPlan.for_interventions(interventions, arch.n_layers, arch.n_heads)):
        yield


@contextmanager
def hooked(model: LoadedModel, plan: HookPlan) -> Iterator[None]:
    """``plan``'s readers and interventions on every forward of ``model.model`` inside the block.

    The ``hf`` backend's hooks, for callers that run the model themselves (the answer round's
    generating prefill, ``generate``); the hooks are removed on exit, also when the block raises.
    """
    arch = model.architecture
    with native_hooks(model.model, layout_for(arch.model_type, arch.vision_type), arch.n_heads, plan):
        yield
