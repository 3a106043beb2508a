"""The one record format of every benchmark: a list of dicts in benchmarks/results/*.json.

Each record: {"metric", "impl" ("minids" or "transformers"), "model" (preset name), "value", "unit",
"device", "torch", "date", "command"} plus optional extra keys (batch, seq_len, ...). Files are written
atomically (temp file + rename), so an interrupted benchmark never leaves a half-written result.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys

import torch

from minids.results import median_time, write_json_atomic  # noqa: F401  (median_time: re-exported)


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
    write_json_atomic(path, records)
