"""Writing results honestly: JSON files replaced atomically, and timings as medians of repeats.

Every experiment and benchmark writes through `write_json_atomic`, so an interrupted run leaves either the
old file or the new one, never half of one; and times through `median_time`, so one slow repeat (another
process, a page fault) does not move the number. Folders of several files (a checkpoint, an adapter) are
written the same way, through `atomic_folder`. Chapters read a committed file through `read_results`, which
says which command makes it where it is not there yet.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time
from typing import Any, Callable

import torch

from .paths import PROJECT_ROOT


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write (replace) a JSON file: a temp file in the same folder, then os.replace over the old one."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes files private; results are for everyone
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_results(path: str | os.PathLike, command: str) -> Any:
    """A committed results file's JSON, or None after one printed line that names the file and the command
    that makes it: chapters read expensive results this way and still run, saying what is missing."""
    path = os.fspath(path)
    if not os.path.exists(path):
        print(f"not measured yet: {os.path.relpath(path, PROJECT_ROOT)}\n    (command: {command})")
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike):
    """Write a folder all at once: yields a temporary folder beside `folder`, which takes its place by rename
    when the block ends without an error (an old `folder` is moved aside first and then deleted). A crash
    leaves the old folder (or none), never half of a new one; on an error the temporary folder is removed.

        with atomic_folder("out/model") as tmp:
            (tmp / "config.json").write_text(...)
    """
    from pathlib import Path

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.partial-"))
    try:
        yield tmp
        for path in tmp.iterdir():
            os.chmod(path, 0o644)  # mkdtemp makes a private folder; checkpoints are for everyone
        os.chmod(tmp, 0o755)
        if folder.exists():
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old-"))
            os.replace(folder, old / "x")
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def median_time(fn: Callable[[], object], device="cpu", warmup: int = 2, repeats: int = 5) -> float:
    """Median wall time in seconds of fn() over `repeats` runs after `warmup` runs, synchronising CUDA."""
    device = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
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
