"""Forward pass on the CPU: minids against transformers on the same weights (float32, inference mode).

    python benchmarks/bench_forward_cpu.py --out benchmarks/results        # about a minute on 2 cores

Two shapes of model: the 67B's shape at laptop width (deepseek-llm-67b-mini: 95 layers, GQA 16/2, where
per-operation overhead counts) and a 7B-shaped slice (4 layers, d_model 1024, MHA, vocab 32000, where the
matrix products dominate). The two implementations are timed alternately, repeat by repeat, so that a busy
machine slows both alike; the median of the repeats is reported. Writes forward_cpu.json: "forward_ms",
"forward_tok_s" and the ratio minids / transformers time.
"""

from __future__ import annotations

import statistics
import time

import torch

from bench_util import Bench, common_args
from hf_twin import hf_twin
from minids import DeepSeekLM, ModelConfig

MODELS = {
    "deepseek-llm-67b-mini": (ModelConfig.preset("deepseek-llm-67b-mini"), 1, 64),
    "deepseek-llm-7b-slice": (ModelConfig.preset("deepseek-llm-7b").replace(
        n_layers=4, d_model=1024, n_heads=8, n_kv_heads=8, d_ff=2816, vocab_size=32000), 1, 64),
}


def main():
    p = common_args(__doc__.splitlines()[0], budget_s=240)
    p.set_defaults(device="cpu", repeats=7)
    args = p.parse_args()
    bench = Bench("small_forward_cpu" if args.small else "forward_cpu", args)
    bench.log(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, (cfg, batch, seq) in MODELS.items():
        if args.small:
            cfg, seq = cfg.replace(n_layers=2), 16

        def run():
            torch.manual_seed(0)
            model = DeepSeekLM(cfg, device="meta").materialize("cpu").eval()
            twin = hf_twin(model)
            ids = torch.randint(0, cfg.vocab_size, (batch, seq))
            fns = {"minids": lambda: model(ids), "transformers": lambda: twin(ids).logits}
            times = {impl: [] for impl in fns}
            with torch.inference_mode():
                err = ((fns["minids"]() - fns["transformers"]()).norm() / fns["transformers"]().norm()).item()
                for _ in range(args.warmup):
                    for fn in fns.values():
                        fn()
                for _ in range(args.repeats):
                    for impl, fn in fns.items():  # alternate, so that machine load hits both alike
                        start = time.perf_counter()
                        fn()
                        times[impl].append(time.perf_counter() - start)
            extra = dict(variant="eager", batch=batch, seq_len=seq, dtype="float32", repeats=args.repeats, rel_err_vs_transformers=err)
            median = {impl: statistics.median(t) for impl, t in times.items()}
            for impl, seconds in median.items():
                spread = [round(1e3 * t, 1) for t in sorted(times[impl])]
                bench.add("forward_ms", impl, name, seconds * 1e3, "ms", times_ms=spread, **extra)
                bench.add("forward_tok_s", impl, name, batch * seq / seconds, "tokens/s", **extra)
            bench.add("forward_time_ratio", "minids", name, median["minids"] / median["transformers"],
                      "minids time / transformers time", **extra)

        bench.measure(f"{name} B={batch} T={seq}", run,
                      dict(metric="forward_ms", impl="minids", model=name, unit="ms"))
    bench.log(f"done; {len(bench.records)} records in {bench.path}")


if __name__ == "__main__":
    main()
