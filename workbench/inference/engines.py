"""Generation engines: what decodes a run's answers and rationales (``[generation] engine``).

An engine only turns prompt token ids into greedy answer token ids. Option scoring and activation
capture never run inside it: they come from the workbench's own forwards over the prompt (and the
prompt + answer), so no engine's batching, paging or prefix caching can put a row under the wrong
record (``tests/unit/test_capture_oracle.py`` checks every row against a batch-size-1 forward).

- ``"hf"``: static left-padded batches through transformers' ``generate``, with the answer round's
  key/value reuse across rounds (:func:`workbench.inference.answering.answer_batch`); the default.
- ``"hf-continuous"``: transformers' continuous batching (``generate_batch`` over a paged key/value
  cache, in process, no new dependency).
- ``"vllm"``: a vLLM server in its own virtual environment, started and stopped by the workbench
  (:mod:`workbench.inference.vllm_server`).

docs/engines.md compares them (settings, what differs and why, measured speed and agreement).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch
import transformers
from transformers import GenerationConfig

from workbench.inference.generation import Generation, decode_text, eos_token_ids, generate_greedy, strip_at_eos
from workbench.models.loading import LoadedModel

if TYPE_CHECKING:
    from workbench.config import GenerationSettings

EngineName = Literal["hf", "hf-continuous", "vllm"]
ENGINE_NAMES: tuple[EngineName, ...] = ("hf", "hf-continuous", "vllm")
CONTINUOUS_PAGE_SIZE = 256
"""Tokens per page of the paged cache (transformers' default); prefix caching shares whole pages."""
DEFAULT_MAX_BATCH_TOKENS = 8192
"""transformers' default tokens per continuous-batching forward: the most this engine uses unless told."""


class EngineError(ValueError):
    """An engine that is not installed or not set up here, or that cannot serve this model."""


class EngineFailure(RuntimeError):
    """An engine that failed while generating (its own error is in the message)."""


class GenerationEngine(Protocol):
    """Greedy decoding of prompt token ids, stopping at the model's EOS tokens or ``max_new_tokens``."""

    @property
    def name(self) -> EngineName:
        """The ``[generation] engine`` value."""
        ...

    def describe(self) -> dict[str, str]:
        """Provenance: ``engine``, the ``package`` that decodes and its ``version``."""
        ...

    def generate(self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int) -> Generation:
        """Each prompt's greedy answer (token ids up to, not including, the first EOS, and its text), in order."""
        ...

    def close(self) -> None:
        """Release what the engine holds (a server process); generating afterwards starts it again."""
        ...


class StaticBatchEngine:
    """``"hf"``: :func:`workbench.inference.generation.generate_greedy` in left-padded batches of ``batch_size``.

    In an answer round, :func:`workbench.inference.answering.answer_batch` does not call it: it decodes
    from the prefill's own key/value cache (reused across rounds). Rationale turns call it.
    """

    def __init__(self, model: LoadedModel, batch_size: int) -> None:
        self.model = model
        self.batch_size = batch_size

    @property
    def name(self) -> EngineName:
        return "hf"

    def describe(self) -> dict[str, str]:
        return {"engine": self.name, "package": "transformers", "version": transformers.__version__}

    def generate(self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int) -> Generation:
        if not prompt_ids:
            return Generation(answer_ids=[], texts=[])
        return generate_greedy(self.model, prompt_ids, max_new_tokens, self.batch_size)

    def close(self) -> None:
        return None


class ContinuousBatchEngine:
    """``"hf-continuous"``: transformers' ``generate_batch`` (continuous batching over a paged cache).

    Every call hands all prompts to one continuous-batching manager, which packs new prompt tokens and
    decoding steps of different requests into the same forwards (at most ``max_batch_tokens`` tokens
    each) and frees a request's pages when it ends. Under the pinned transformers (5.23) it runs only
    under ``torch.no_grad``: in ``torch.inference_mode`` every request fails (its static tensors are
    written in place), and ``generate_batch`` logs failed or missing requests instead of raising, so
    this engine checks every request and raises :class:`EngineFailure`. The model keeps its attention
    implementation (sdpa stays sdpa, eager becomes transformers' ``paged|eager`` for the call and is
    restored after it); ``sdpa_paged`` is not accepted by this version.

    The paged cache is sized for the call (every request at once, ``CONTINUOUS_PAGE_SIZE`` tokens per
    page): left to itself, transformers would reserve 60 % of the free memory of a CPU machine. Without
    ``max_batch_tokens`` a forward holds at most all the call's prompt tokens (transformers' own default,
    8192, allocates and clears batch buffers of that size on every call). Stopping the manager runs the
    garbage collector twice, which walks every object of the process (1.5 s per call in a test
    session); objects that existed before the call are frozen out of it (``gc.freeze``) meanwhile.
    """

    def __init__(self, model: LoadedModel, max_batch_tokens: int | None, prefix_caching: bool) -> None:
        check_engine_available("hf-continuous")
        self.model = model
        self.max_batch_tokens = max_batch_tokens
        self.prefix_caching = prefix_caching

    @property
    def name(self) -> EngineName:
        return "hf-continuous"

    def describe(self) -> dict[str, str]:
        return {"engine": self.name, "package": "transformers", "version": transformers.__version__}

    def generate(self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int) -> Generation:
        from transformers import ContinuousBatchingConfig

        if not prompt_ids:
            return Generation(answer_ids=[], texts=[])
        eos_ids = eos_token_ids(self.model)
        config = GenerationConfig(  # type: ignore[no-untyped-call, unused-ignore]  # untyped in transformers
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=self.model.tokenizer.pad_token_id,
            eos_token_id=eos_ids,
        )
        pages = sum(math.ceil((len(ids) + max_new_tokens) / CONTINUOUS_PAGE_SIZE) for ids in prompt_ids)
        prompt_tokens = sum(len(ids) for ids in prompt_ids)
        batching = ContinuousBatchingConfig(
            page_size=CONTINUOUS_PAGE_SIZE,
            num_blocks=pages + 1,
            max_batch_tokens=self.max_batch_tokens or min(prompt_tokens, DEFAULT_MAX_BATCH_TOKENS),
            allow_block_sharing=self.prefix_caching,
        )
        generator: Any = self.model.model  # ``generate_batch`` comes from ContinuousMixin, which the stubs lack
        gc.freeze()
        try:
            with torch.no_grad():
                outputs = generator.generate_batch(
                    inputs=[list(ids) for ids in prompt_ids],
                    generation_config=config,
                    continuous_batching_config=batching,
                    progress_bar=False,
                )
        except ValueError as error:  # e.g. an attention implementation continuous batching refuses
            raise EngineError(f'[generation] engine = "hf-continuous": {" ".join(str(error).split())}') from None
        finally:
            gc.unfreeze()
        results = list(outputs.values())  # in the order of the inputs
        failed = [result for result in results if result.error is not None]
        if len(results) != len(prompt_ids) or failed:
            reason = failed[0].error if failed else f"{len(prompt_ids) - len(results)} request(s) returned nothing"
            raise EngineFailure(f"hf-continuous: {len(prompt_ids)} requests, {len(failed)} failed: {reason}")
        if any(result.prompt_ids != list(ids) for result, ids in zip(results, prompt_ids)):
            raise EngineFailure("hf-continuous returned an answer under another request's prompt")
        answers = strip_at_eos([result.generated_tokens for result in results], eos_ids)
        return Generation(answer_ids=answers, texts=[decode_text(self.model.tokenizer, ids) for ids in answers])

    def close(self) -> None:
        return None


def check_engine_available(engine: str) -> None:
    """Raise :class:`EngineError` (one line: the engine and the fix) when ``engine`` cannot run here.

    Cheap (no model, no server): ``"hf"`` always runs; ``"hf-continuous"`` needs transformers'
    continuous batching; ``"vllm"`` needs :data:`workbench.inference.vllm_server.VLLM_PYTHON_ENV`
    naming a Python that has vLLM (its version is read from package metadata, vLLM is not imported).
    """
    if engine not in ENGINE_NAMES:
        raise EngineError(f'[generation] engine = "{engine}" is unknown; use one of {", ".join(ENGINE_NAMES)}')
    if engine == "hf-continuous":
        try:
            from transformers import ContinuousBatchingConfig  # noqa: F401
        except ImportError:
            raise EngineError(
                f'[generation] engine = "hf-continuous" needs transformers\' continuous batching, which '
                f"transformers {transformers.__version__} lacks; install the pinned transformers==5.23.0"
            ) from None
    if engine == "vllm":
        from workbench.inference.vllm_server import vllm_interpreter

        vllm_interpreter()


def build_engine(model: LoadedModel, settings: GenerationSettings, batch_size: int) -> GenerationEngine:
    """The engine ``settings.engine`` names, for ``model`` (``batch_size``: the static engine's batches)."""
    check_engine_available(settings.engine)
    if settings.engine == "hf":
        return StaticBatchEngine(model, batch_size)
    if settings.engine == "hf-continuous":
        return ContinuousBatchEngine(model, settings.max_batch_tokens, settings.prefix_caching)
    from workbench.inference.vllm_server import VllmEngine

    return VllmEngine(model, settings)
