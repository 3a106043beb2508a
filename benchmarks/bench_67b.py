"""The whole 67B preset on one GPU: materialised in bf16 straight from the meta device, then prefill.

    python benchmarks/bench_67b.py --device cuda --peak-flops 790e12 --out benchmarks/results
    python benchmarks/bench_67b.py --small --device cpu --compile-backend aot_eager --out /tmp/check

The model is built on the meta device (shapes only) and `materialize("cuda")` allocates each weight once,
directly on the GPU in bf16, and initialises it there: no CPU copy, no second copy (the records show the
peak memory after materialising next to the weights' bytes). transformers' LlamaForCausalLM runs on the very
same tensors (benchmarks/hf_twin.py), so both fit. Prefill at B x T that leave the activations inside the
~13 GB the weights leave free. Writes h200_67b.json (with --small: small_67b.json). Batch-1 decode of the 67B
is measured by the decode benchmark, not here.
"""

from __future__ import annotations

import time

import torch

from bench_prefill import parse_shapes, run_shapes
from bench_util import Bench, common_args, sync
from hf_twin import hf_twin
from minids import DeepSeekLM, ModelConfig


def main():
    p = common_args(__doc__.splitlines()[0], budget_s=90)
    p.add_argument("--shapes", default="1x2048,4x2048", help="comma-separated BxT")
    args = p.parse_args()
    bench = Bench("small_67b" if args.small else "h200_67b", args)
    device = bench.device
    name = "deepseek-llm-67b-mini" if args.small else "deepseek-llm-67b"
    cfg = ModelConfig.preset(name)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shapes = [(1, 64)] if args.small else parse_shapes(args.shapes)
    peak = bench.ceilings(dtype)

    def materialize():
        start = time.perf_counter()
        model = DeepSeekLM(cfg, device="meta", dtype=dtype)
        built_s = time.perf_counter() - start
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        model.materialize(device)
        sync(device)
        seconds = time.perf_counter() - start
        weights = sum(t.numel() * t.element_size() for t in model.parameters())
        bench.add("weights_gb", "minids", name, weights / 1e9, "GB", dtype=str(dtype))
        bench.add("materialize_s", "minids", name, seconds, "s", meta_build_s=round(built_s, 2))
        if device.type == "cuda":
            free, total = torch.cuda.mem_get_info()
            bench.add("peak_mem_after_materialize_gb", "minids", name, torch.cuda.max_memory_allocated() / 1e9,
                      "GB", weights_gb=weights / 1e9)
            bench.add("device_free_after_weights_gb", "minids", name, free / 1e9, "GB", device_total_gb=total / 1e9)
        return model.eval().requires_grad_(False)

    model = bench.measure(f"materialize {name} in {dtype} on {device}", materialize)
    if model is None:
        bench.log("cannot go on without the model")
        return
    twin = hf_twin(model)
    run_shapes(bench, model, twin, cfg, name, shapes, peak, dtype)
    bench.log(f"done; {len(bench.records)} records in {bench.path}")


if __name__ == "__main__":
    main()
