"""Encoder checkpoints (BERT, RoBERTa: the models of the ProSocialTuning and PAC-tuning papers):
telling them apart from causal LMs before any weights load, and loading them for fine-tuning.

An encoder is loaded with ``AutoModelForMaskedLM`` (``trust_remote_code`` off): its base model is
the bare encoder that upstream's ``bert_clf`` classifies from (BERT's masked-LM class builds it
without the pooler, which upstream deletes), and the pretrained masked-LM head stays available
for the masked-LM bias measures (``[bias] likelihood = "masked"``) after fine-tuning. The
tokenizer pads on the right, so [CLS] is the first token of every row.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer, PretrainedConfig

from workbench.models.architecture import ModelArchitecture
from workbench.models.loading import (
    LoadedModel,
    ModelSpecError,
    check_device,
    resolve_dtype,
    resolve_model_spec,
)

SUPPORTED_ENCODERS = ("bert", "roberta")
"""Encoder families the classifier and the ProSocialTuning head slices know."""

ENCODER_MODEL_TYPES = frozenset(
    {
        *SUPPORTED_ENCODERS,
        "albert",
        "camembert",
        "deberta",
        "deberta-v2",
        "distilbert",
        "electra",
        "ernie",
        "modernbert",
        "mpnet",
        "xlm-roberta",
    }
)
"""``config.model_type`` values of bidirectional encoders (recognised so that causal-only
commands can refuse them in one line)."""


def is_encoder_config(config: PretrainedConfig) -> bool:
    """Whether a config describes a bidirectional encoder (not one configured as a decoder)."""
    return config.model_type in ENCODER_MODEL_TYPES and not getattr(config, "is_decoder", False)


def spec_config(spec: str) -> PretrainedConfig | None:
    """The config a model spec names, read without loading weights; None for an embedded model or a
    ``.gguf`` file (causal LMs by construction).

    Raises:
        ModelSpecError: the spec names nothing loadable (as :func:`resolve_model_spec`).
    """
    found = resolve_model_spec(spec)
    if found.source in ("embedded", "gguf"):
        return None
    location = str(found.path) if found.path is not None else spec
    config: PretrainedConfig = AutoConfig.from_pretrained(location, trust_remote_code=False)
    return config


def encoder_model_type(spec: str) -> str | None:
    """The ``model_type`` of ``spec`` when it is an encoder, else None."""
    config = spec_config(spec)
    return config.model_type if config is not None and is_encoder_config(config) else None


def load_encoder(spec: str, *, device: str | Any = "auto", dtype: str | Any = "auto") -> LoadedModel:
    """Load a BERT or RoBERTa checkpoint (local folder or hub id, e.g. ``bert-base-uncased``,
    ``roberta-base``) with its masked-LM head and a right-padding tokenizer.

    Raises:
        ModelSpecError: not an encoder, or an encoder family other than :data:`SUPPORTED_ENCODERS`.
        DeviceError: a device this machine does not have.
    """
    resolved_device = check_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    found = resolve_model_spec(spec)
    config = spec_config(spec)
    if config is None or not is_encoder_config(config):
        raise ModelSpecError(f"model {spec!r} is not an encoder checkpoint; load causal LMs with load_model")
    if config.model_type not in SUPPORTED_ENCODERS:
        raise ModelSpecError(
            f"model {spec!r} is a {config.model_type!r} encoder; fine-tuning supports {', '.join(SUPPORTED_ENCODERS)}"
        )
    location = str(found.path) if found.path is not None else spec
    tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=False)
    tokenizer.padding_side = "right"
    model = AutoModelForMaskedLM.from_pretrained(location, dtype=resolved_dtype, trust_remote_code=False)
    model.to(resolved_device).eval()
    weights_hash = found.weights_hash() or f"hub-revision:{getattr(model.config, '_commit_hash', None) or 'unknown'}"
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        spec=spec,
        model_id=found.model_id,
        source=found.source,
        weights_hash=weights_hash,
        architecture=ModelArchitecture.from_config(model.config),
    )
