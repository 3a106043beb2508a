"""What every benchmark script of issue 7 shares: common flags, a time budget, failure-isolated measurements.

Each measurement runs inside `Bench.measure`: an exception (an out-of-memory, a kernel that cannot run) is
printed and recorded as a record with value None and an "error" key, memory is freed, and the next
measurement goes on. Records are written after every measurement (atomically, benchmarks/records.py), so a
run cut short still leaves everything measured so far.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from records import median_time, record, write_records  # noqa: E402


def common_args(description: str, budget_s: float) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="benchmarks/results", help="folder for the JSON records")
    p.add_argument("--small", action="store_true", help="tiny shapes: checks the whole script path on a CPU")
    p.add_argument("--peak-flops", type=float, default=None,
                   help="device peak in FLOP/s for MFU (e.g. 790e12, the measured H200 bf16 peak); "
                        "default: measured here by a large matrix product")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile-backend", default="inductor", help="'aot_eager' for a quick CPU check")
    p.add_argument("--budget-s", type=float, default=budget_s,
                   help="skip the remaining measurements once this many seconds have passed")
    return p


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class Bench:
    def __init__(self, name: str, args):
        self.args, self.device = args, torch.device(args.device)
        self.path = os.path.join(args.out, f"{name}.json")
        self.records: list[dict] = []
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def log(self, msg: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {msg}", flush=True)

    def add(self, metric, impl, model, value, unit, **extra) -> dict:
        rec = record(metric, impl, model, value, unit, self.device, **extra)
        self.records.append(rec)
        write_records(self.path, self.records)
        shown = f"{value:.4g}" if isinstance(value, float) else value
        self.log(f"  {metric} {impl} {extra.get('variant', '')}: {shown} {unit}")
        return rec

    def measure(self, label: str, fn, failure: dict | None = None):
        """Run fn(); on failure record `failure` (metric, impl, model, unit, extra keys) with the error."""
        if self.elapsed() > self.args.budget_s:
            self.log(f"SKIP {label}: time budget of {self.args.budget_s:.0f}s spent")
            if failure:
                self.add(value=None, error="skipped: time budget spent", **failure)
            return None
        self.log(f"{label} ...")
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001  one failure must not lose the other measurements
            msg = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            self.log(f"FAILED {label}: {msg}")
            traceback.print_exc(limit=3)
            if failure:
                self.add(value=None, error=msg, **failure)
            return None
        finally:
            free_memory()

    def time(self, fn, warmup=None, repeats=None) -> float:
        return median_time(fn, self.device, warmup=self.args.warmup if warmup is None else warmup,
                           repeats=self.args.repeats if repeats is None else repeats)

    def ceilings(self, dtype) -> float:
        """Measure the matmul peak and copy bandwidth; return the peak used for MFU (--peak-flops or measured)."""
        from minids.mfu import measure_copy_bandwidth, measure_matmul_peak

        small = self.args.small
        measured = self.measure("matmul peak", lambda: measure_matmul_peak(
            self.device, dtype, n=256 if small else None))
        if measured:
            self.add("matmul_peak_tflops", "torch", "-", measured / 1e12, "TFLOP/s", dtype=str(dtype))
        bw = self.measure("copy bandwidth", lambda: measure_copy_bandwidth(
            self.device, nbytes=2**24 if small else None))
        if bw:
            self.add("copy_bandwidth_tb_s", "torch", "-", bw / 1e12, "TB/s")
        peak = self.args.peak_flops or measured
        self.log(f"MFU against peak {peak / 1e12:.1f} TFLOP/s ({'given' if self.args.peak_flops else 'measured'})")
        return peak
