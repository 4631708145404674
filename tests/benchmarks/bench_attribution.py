"""Benchmark: attribution patching vs activation patching of every head of the packaged model
on the Winogender contrast pairs (time and rank agreement).

Run: ``.venv/bin/python tests/benchmarks/bench_attribution.py [--model smollm2-135m-instruct]``.
Prints one JSON object: pairs used/dropped, seconds per method, Spearman correlation of |effect|
and top-k agreement (k = 5, 10, 20) between the two methods' head tables.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from workbench.attribution.contrast import tokenize_contrast_pairs, winogender_contrast_pairs
from workbench.attribution.head_effects import (
    activation_patching_effects,
    attribution_patching_effects,
    head_outputs,
    total_effect,
)
from workbench.attribution.selection import rank_correlation, top_k_agreement
from workbench.models.loading import load_model

OCCUPATIONS = Path(__file__).resolve().parents[3] / "shared" / "data" / "winogender" / "occupations-stats.tsv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--occupations", type=Path, default=OCCUPATIONS)
    args = parser.parse_args()
    model = load_model(args.model, device="cpu")
    contrast = tokenize_contrast_pairs(model.tokenizer, winogender_contrast_pairs(args.occupations))
    start = time.perf_counter()
    source_z = head_outputs(model, contrast.counterfactual)
    capture_seconds = time.perf_counter() - start
    start = time.perf_counter()
    patched = activation_patching_effects(model, contrast, source_z).numpy()
    patching_seconds = time.perf_counter() - start
    start = time.perf_counter()
    estimated = attribution_patching_effects(model, contrast, source_z).numpy()
    attribution_seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "model": model.model_id,
                "heads": int(patched.size),
                "pairs_used": int(contrast.target_ids.numel()),
                "pairs_dropped": contrast.n_dropped,
                "mean_total_effect": float(total_effect(model, contrast).mean()),
                "seconds_capture_counterfactual": round(capture_seconds, 3),
                "seconds_activation_patching": round(patching_seconds, 3),
                "seconds_attribution_patching": round(attribution_seconds, 3),
                "speedup": round(patching_seconds / attribution_seconds, 1),
                "spearman_abs_effect": round(rank_correlation(patched, estimated), 4),
                "top_k_agreement": {k: top_k_agreement(patched, estimated, k) for k in (5, 10, 20)},
                "max_abs_effect_patching": float(abs(patched).max()),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
