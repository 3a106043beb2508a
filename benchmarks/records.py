"""The one record format of every benchmark: a list of dicts in benchmarks/results/*.json.

Each record: {"metric", "impl" ("minids" or "transformers"), "model" (preset name), "value", "unit",
"device", "torch", "date", "command"} plus optional extra keys (batch, seq_len, ...). Files are written
atomically (temp file + rename), so an interrupted benchmark never leaves a half-written result.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from typing import Callable

import torch


def device_name(device: str | torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def record(metric: str, impl: str, model: str, value: float, unit: str, device, **extra) -> dict:
    return {
        "metric": metric, "impl": impl, "model": model, "value": value, "unit": unit,
        "device": device_name(device), "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "command": " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable)] + sys.argv),
        **extra,
    }


def write_records(path: str, records: list[dict]) -> None:
    """Write (replace) a results file atomically."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(records, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def median_time(fn: Callable[[], object], device, warmup: int = 2, repeats: int = 5) -> float:
    """Median wall time in seconds of fn() over `repeats` runs after `warmup`, synchronising CUDA."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
