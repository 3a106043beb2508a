"""Build benchmarks/RESULTS.md from the records in benchmarks/results/*.json (the one record format).

    python benchmarks/make_results_md.py [--results benchmarks/results] [--output benchmarks/RESULTS.md]

One table per results file with every record (failed or skipped measurements shown with their error), the
command that produced it, and a headline table: minids against transformers where both were measured.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from records import write_records  # noqa: E402,F401  (same folder; keeps the format in one place)

HEADLINES = ("prefill_mfu", "train_mfu", "decode_frac_of_bandwidth_floor", "forward_tok_s", "decode_tok_s",
             "prefill_tok_s")
EXPECTED = {
    "prefill.json": "bash benchmarks/run_gpu.sh benchmarks/results  (one H200)",
    "train.json": "bash benchmarks/run_gpu.sh benchmarks/results  (one H200)",
    "h200_67b.json": "bash benchmarks/run_gpu.sh benchmarks/results  (one H200)",
    "forward_cpu.json": "python benchmarks/bench_forward_cpu.py --out benchmarks/results",
}


def fmt(value, unit: str) -> str:
    if value is None:
        return "—"
    if unit.startswith("fraction"):
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def shape(r: dict) -> str:
    length = r.get("seq_len", r.get("context"))  # batched decode records name their cached length "context"
    return f"{r['batch']}x{length}" if "batch" in r and length is not None else ""


def variant(r: dict) -> str:
    v = r.get("variant", r.get("path", ""))
    if r.get("decode_attention"):
        v += f" ({r['decode_attention']} attention, {r.get('kv_heads')} KV heads)"
    if r.get("sdpa_backend", "default") != "default":
        v += f" (sdpa {r['sdpa_backend']})"
    return v


def headline(records: list[dict]) -> list[str]:
    """Best minids variant against transformers as shipped (eager, default kernel), per metric and shape."""
    rows = []
    # batched decode (records with a "context") has its own table below: its best batch is not batch 1's figure
    records = [r for r in records if "context" not in r]
    keys = sorted({(r["metric"], r["model"], shape(r)) for r in records if r["metric"] in HEADLINES})
    for metric, model, shp in keys:
        same = [r for r in records if (r["metric"], r["model"], shape(r)) == (metric, model, shp)
                and r.get("value") is not None]
        ours = [r for r in same if r["impl"] == "minids"]
        peer = [r for r in same if r["impl"] == "transformers" and r.get("sdpa_backend", "default") == "default"
                and r.get("variant", "eager") == "eager"]
        if not ours:
            continue
        best = max(ours, key=lambda r: r["value"])
        unit = best["unit"]
        ref = peer[0]["value"] if peer else None
        ratio = f"{best['value'] / ref:.2f}x" if ref else "—"
        how = f" ({variant(best)})" if variant(best) else ""
        rows.append(f"| {metric} | {model} | {shp} | {fmt(best['value'], unit)}{how} | "
                    f"{fmt(ref, unit)} | {ratio} |")
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--results", default=os.path.join(here, "results"))
    p.add_argument("--output", default=os.path.join(here, "RESULTS.md"))
    args = p.parse_args()
    files = sorted(glob.glob(os.path.join(args.results, "*.json")))
    everything = {os.path.basename(f): json.load(open(f)) for f in files}
    lines = ["# Benchmark results", "",
             "Built by `python benchmarks/make_results_md.py` from `benchmarks/results/*.json` (do not edit by "
             "hand). MFU = tokens/s x `minids.accounting.matmul_flops_per_token` (every matrix product, causal "
             "attention halving, x3 for training) / the peak given to the script (the records' `peak_flops`; "
             "790e12 = the bf16 matmul peak measured on the H200, "
             "[docs/references.md](../docs/references.md#h200)).", ""]
    pending = [f"`{name}` ({cmd})" for name, cmd in EXPECTED.items() if name not in everything]
    if pending:
        lines += ["Pending (not measured yet): " + "; ".join(pending) + ".", ""]
    all_records = [r for recs in everything.values() for r in recs]
    rows = headline(all_records)
    if rows:
        lines += ["## minids against transformers", "",
                  "Best minids variant against transformers as shipped (eager, PyTorch's default attention "
                  "kernel), same weights, same process.", "",
                  "| metric | model | BxT | minids | transformers | ratio |", "|---|---|---|---|---|---|", *rows, ""]
    for name, recs in everything.items():
        commands = sorted({r.get("command", "") for r in recs})
        devices = sorted({r.get("device", "") for r in recs})
        lines += [f"## {name}", "", f"Device: {', '.join(devices)}; torch {recs[0].get('torch', '?')}; "
                  f"date {', '.join(sorted({str(r.get('date', '?')) for r in recs}))}.", "", "Reproduce: " + "; ".join(f"`{c}`" for c in commands), "",
                  "| metric | impl | variant | model | BxT | value | unit | note |", "|---|---|---|---|---|---|---|---|"]
        for r in recs:
            note = r.get("error", "")
            for k in ("compile_s", "first_step_s", "part", "lowering_choices"):
                if k in r:
                    note += f"{k} {r[k]}"
            if r.get("kernels"):  # a profile's busiest kernels
                note += "; ".join(f"{name[:40]} {us} us" for name, us in r["kernels"][:3])
            lines.append(f"| {r['metric']} | {r['impl']} | {variant(r)} | {r['model']} | {shape(r)} | "
                         f"{fmt(r.get('value'), r['unit'])} | {r['unit']} | {note} |")
        lines.append("")
    text = "\n".join(lines)
    tmp = args.output + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, args.output)
    print(f"wrote {args.output} from {len(files)} file(s)")


if __name__ == "__main__":
    main()
