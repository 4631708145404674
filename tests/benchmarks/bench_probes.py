"""Batched per-layer logistic probes against a per-layer scikit-learn loop (run by hand).

    .venv/bin/python tests/benchmarks/bench_probes.py [--layers 30] [--records 5000] [--width 576]

Synthetic activations shaped like a small model's residual stream (SmolLM2-135M: 30 layers,
d = 576): low-rank correlated structure with a few outlier dimensions, and a label direction whose
strength grows with depth. Both sides fit standardised L2 logistic regression (C = 1) on the same
80% of records and are scored on the other 20%; the script prints time and accuracy side by side.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from probes.estimators import LogisticProbe
from probes.layerwise import LayerwiseProbe


def residual_like_activations(
    n_layers: int, n_records: int, width: int, seed: int = 0, rank: int = 48
) -> tuple[np.ndarray, np.ndarray]:
    """Activations [n, layers, d] (float32) and labels [n] in {0, 1}."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n_records)
    activations = np.empty((n_records, n_layers, width), dtype=np.float32)
    for layer in range(n_layers):
        mixing = rng.normal(size=(rank, width)) * (10.0 / np.arange(1, rank + 1))[:, None]
        states = rng.normal(size=(n_records, rank)) @ mixing
        states += 0.05 * rng.normal(size=(n_records, width))
        states[:, :3] *= 40.0
        direction = rng.normal(size=width)
        direction /= np.linalg.norm(direction)
        strength = 0.3 + 2.0 * layer / n_layers
        activations[:, layer] = states + np.outer((labels - 0.5) * strength, direction)
    return activations, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--width", type=int, default=576)
    parser.add_argument("--device", default=None, help="torch device; default: CUDA when present")
    arguments = parser.parse_args()
    activations, labels = residual_like_activations(arguments.layers, arguments.records, arguments.width)
    cut = int(0.8 * arguments.records)
    train, test = slice(0, cut), slice(cut, None)

    start = time.perf_counter()
    probe = LayerwiseProbe(LogisticProbe(C=1.0, device=arguments.device))
    probe.fit(activations[train], labels[train])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    batched_seconds = time.perf_counter() - start
    batched = ((probe.predict_proba(activations[test]) > 0.5) == labels[test, None]).mean(axis=0)

    start = time.perf_counter()
    reference = np.empty(arguments.layers)
    for layer in range(arguments.layers):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
        model.fit(activations[train, layer], labels[train])
        reference[layer] = model.score(activations[test, layer], labels[test])
    loop_seconds = time.perf_counter() - start

    device = arguments.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(
        f"{arguments.layers} layers x {arguments.records} records x {arguments.width} dims, "
        f"torch threads {torch.get_num_threads()}, batched device {device}"
    )
    print(f"{'':24}{'seconds':>10}{'mean acc':>10}")
    print(f"{'batched torch (Newton)':24}{batched_seconds:10.2f}{batched.mean():10.4f}")
    print(f"{'scikit-learn loop':24}{loop_seconds:10.2f}{reference.mean():10.4f}")
    print(
        f"speed-up {loop_seconds / batched_seconds:.1f}x; "
        f"largest per-layer accuracy gap {np.abs(batched - reference).max() * 100:.2f} points"
    )


if __name__ == "__main__":
    main()
