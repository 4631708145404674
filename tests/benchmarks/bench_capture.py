"""Capture overhead, side by side: plain forward vs. captures on each backend vs. TransformerLens.

Run by hand (not in CI)::

    .venv/bin/python tests/benchmarks/bench_capture.py [--model smollm2-135m-instruct] [--batch 8] [--seq 128]

Each variant runs in its own subprocess so that its peak resident memory is its own. Printed:
median wall time of ``--repeats`` forwards, tokens per second, the ratio to the plain forward,
and peak RSS. Every variant captures ``resid_post`` and ``attn.hook_z`` of every layer at every
token (the heaviest request), and once at the last token only.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import time

VARIANTS = (
    "plain forward",
    "capture hf (last token)",
    "capture hf",
    "capture transformer_lens",
    "capture nnsight",
    "TL run_with_cache (filtered)",
)


def _measure(variant: str, model_spec: str, batch: int, seq: int, repeats: int, queue: multiprocessing.Queue) -> None:
    import torch

    from workbench.hooks import capture_tokens
    from workbench.hooks.bridge import transformer_bridge
    from workbench.models import load_model

    torch.manual_seed(0)
    model = load_model(model_spec)
    vocab = model.architecture.vocab_size
    sequences = torch.randint(3, vocab, (batch, seq)).tolist()
    sites = ["blocks.*.hook_resid_post", "blocks.*.attn.hook_z"]
    ids = torch.tensor(sequences, device=model.device)

    def plain() -> None:
        with torch.inference_mode():
            model.model(input_ids=ids, use_cache=False)

    def ours(backend: str, position: str = "all"):
        return lambda: capture_tokens(
            model, sequences, [seq] * batch, sites=sites, positions=(position,), backend=backend, batch_size=batch
        )

    def tl_cache() -> None:
        bridge = transformer_bridge(model.model, model.tokenizer, model.model_id)
        names = lambda name: name.endswith("hook_resid_post") or name.endswith("attn.hook_z")  # noqa: E731
        with torch.inference_mode():
            bridge.run_with_cache(ids, names_filter=names)

    run = {
        "plain forward": plain,
        "capture hf (last token)": ours("hf", "last"),
        "capture hf": ours("hf"),
        "capture transformer_lens": ours("transformer_lens"),
        "capture nnsight": ours("nnsight"),
        "TL run_with_cache (filtered)": tl_cache,
    }[variant]
    run()  # warm-up (and the bridge / nnsight wrapper creation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((statistics.median(times), peak_mb))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    results = {}
    for variant in VARIANTS:
        queue = context.Queue()
        process = context.Process(
            target=_measure, args=(variant, args.model, args.batch, args.seq, args.repeats, queue)
        )
        process.start()
        results[variant] = queue.get()
        process.join()
    base = results["plain forward"][0]
    tokens = args.batch * args.seq
    print(f"model {args.model}, batch {args.batch} x {args.seq} tokens, median of {args.repeats}")
    print(f"{'variant':32s} {'ms':>9s} {'tokens/s':>10s} {'x plain':>8s} {'peak RSS MB':>12s}")
    for variant, (seconds, peak) in results.items():
        print(f"{variant:32s} {seconds * 1e3:9.1f} {tokens / seconds:10.0f} {seconds / base:8.2f} {peak:12.0f}")


if __name__ == "__main__":
    main()
