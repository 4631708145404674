"""What the rest of the workbench needs to know about a loaded model's shape."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig

from workbench.models.vision import vision_type


@dataclass(frozen=True)
class ModelArchitecture:
    """Shape facts of a decoder-only transformer, read from its Hugging Face config.

    Attributes:
        model_type: the config's ``model_type`` (``"llama"``, ``"qwen2"``, ``"gpt2"``, ...).
        n_layers: number of decoder blocks.
        n_heads: number of query heads per block.
        n_kv_heads: number of key/value heads (``n_heads`` unless grouped-query attention).
        d_model: residual stream width.
        d_head: width of one head's ``z`` (the per-head input slice of the output projection).
        d_mlp: hidden width of the MLP.
        vocab_size: number of token ids.
        max_positions: the context length the model was trained for.
        vision_type: the ``model_type`` of a vision-language model (``"llava"``, ``"idefics3"``, ...),
            whose other fields describe its language model; ``None`` for a text-only model.
    """

    model_type: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    vocab_size: int
    max_positions: int
    vision_type: str | None = None

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> ModelArchitecture:
        """Read the shape from a (text) config; GPT-2 style names are accepted too.

        Raises:
            VisionModelError: a config with a vision tower of an unknown type.
        """
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        n_heads = _first(text, "num_attention_heads", "n_head")
        d_model = _first(text, "hidden_size", "n_embd")
        d_head = getattr(text, "head_dim", None) or d_model // n_heads
        return cls(
            model_type=text.model_type,
            n_layers=_first(text, "num_hidden_layers", "n_layer"),
            n_heads=n_heads,
            n_kv_heads=getattr(text, "num_key_value_heads", None) or n_heads,
            d_model=d_model,
            d_head=d_head,
            d_mlp=getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * d_model,
            vocab_size=text.vocab_size,
            max_positions=_first(text, "max_position_embeddings", "n_positions"),
            vision_type=vision_type(config),
        )


def _first(config: PretrainedConfig, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    raise ValueError(f"model config {type(config).__name__} has none of {names}; cannot read its shape")
