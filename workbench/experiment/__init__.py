"""The experiment layer: what one run writes per answer turn (its records) and how it is read back."""

from workbench.experiment.records import (
    MAX_OPTIONS,
    NO_INDEX,
    RECORD_COLUMNS,
    RunRecord,
    decode_records,
    encode_index,
    encode_option_probs,
    record_key,
)

__all__ = [
    "MAX_OPTIONS",
    "NO_INDEX",
    "RECORD_COLUMNS",
    "RunRecord",
    "decode_records",
    "encode_index",
    "encode_option_probs",
    "record_key",
]
