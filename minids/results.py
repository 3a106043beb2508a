"""Writing results honestly: JSON files replaced atomically, and timings as medians of repeats.

Every experiment and benchmark writes through `write_json_atomic`, so an interrupted run leaves either the
old file or the new one, never half of one; and times through `median_time`, so one slow repeat (another
process, a page fault) does not move the number. Folders of several files (a checkpoint, an adapter) are
written the same way, through `atomic_folder`. Chapters read a committed file through `read_results`, which
says which command makes it where it is not there yet.

Nothing is lost: a writer replaces only its own kind of file or folder (a JSON file for write_json_atomic; a
folder that the caller's `recognise` accepts for atomic_folder: save_hf's model folders, save_adapter's adapter
folders) and refuses anything else, saying what is there, unless told overwrite=True.
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


def write_json_atomic(path: str | os.PathLike, obj: Any, overwrite: bool = False) -> None:
    """Write (replace) a JSON file: a temp file in the same folder, then os.replace over the old one.

    Only a JSON file is replaced (a results file, the writer's own kind): a folder, or a file that does not
    parse as JSON (a notebook's notes, a checkpoint), is refused unless overwrite=True."""
    path = os.fspath(path)
    check_json_target(path, overwrite)
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


def check_json_target(path: str | os.PathLike, overwrite: bool = False) -> None:
    """Raise, saying why, if write_json_atomic could not or must not write `path`: a folder there, a regular
    file where a parent folder should be, or an existing file that is not JSON (unless overwrite=True).
    Experiments call it before their first step, so that a bad --out never costs a run."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a folder; a results file needs a file path there")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise NotADirectoryError(f"cannot write {path}: {parent} is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"cannot write {path}: the folder {parent} is not writable")
    if os.path.isfile(path) and not overwrite:
        try:
            with open(path, encoding="utf-8") as f:
                json.load(f)
        except (ValueError, UnicodeDecodeError):
            raise FileExistsError(f"{path} exists and is not a JSON results file, so replacing it would lose it; "
                                  "choose another path, or pass overwrite=True") from None


def read_results(path: str | os.PathLike, command: str) -> Any:
    """A committed results file's JSON, or None after one printed line that names the file and the command
    that makes it: chapters read expensive results this way and still run, saying what is missing."""
    path = os.fspath(path)
    if not os.path.exists(path):
        print(f"not measured yet: {os.path.relpath(path, PROJECT_ROOT)}\n    (command: {command})")
        return None
    from .files import read_json

    return read_json(path, what="results file")  # a damaged file is named, with what is wrong


def check_replaceable(folder: str | os.PathLike, what: str, recognise: Callable[[Any], bool] | None,
                      overwrite: bool, writer: str) -> None:
    """Refuse to replace `folder` unless it is absent, an empty folder, a folder `recognise` takes for one of
    `what` (the writer's own kind), or overwrite is True. The message says what is there and how to go on.

    transformers' save_pretrained and peft's never delete what they did not write (they write into the folder);
    minids replaces a folder whole, so it replaces only one it recognises and refuses anything else."""
    from pathlib import Path

    folder = Path(folder)
    if overwrite or not (folder.exists() or folder.is_symlink()):
        return
    how = "choose another path, or pass overwrite=True to replace it"
    if not folder.is_dir():
        raise FileExistsError(f"{writer}: {folder} is a file, not a {what}; {how}")
    entries = sorted(p.name for p in folder.iterdir())
    if not entries or recognise is None or recognise(folder):
        return
    shown = ", ".join(entries[:6]) + (f" and {len(entries) - 6} more" if len(entries) > 6 else "")
    raise FileExistsError(f"{writer}: {folder} holds {len(entries)} entries ({shown}) and is not a {what}, so "
                          f"replacing it would delete them; {how}")


def folder_of(names: set[str], suffixes: tuple[str, ...], required: tuple[str, ...]) -> Callable[[Any], bool]:
    """A recogniser for check_replaceable: every entry is one of `names` or ends with one of `suffixes`, and
    every file in `required` is there."""
    def recognise(folder) -> bool:
        entries = [p.name for p in folder.iterdir()]
        return all(n in names or n.endswith(suffixes) for n in entries) and all(r in entries for r in required)
    return recognise


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike, what: str = "folder", recognise: Callable[[Any], bool] | None = None,
                  overwrite: bool = False, writer: str = "atomic_folder"):
    """Write a folder all at once: yields a temporary folder beside `folder`, which takes its place by rename
    when the block ends without an error (an old `folder` is moved aside first and then deleted). A crash
    leaves the old folder (or none), never half of a new one; on an error the temporary folder is removed, and
    if the second rename fails the old folder is moved back.

    What is at `folder` already is replaced only when check_replaceable allows it (before any writing): a
    folder that `recognise` takes for `what`, or anything with overwrite=True. A regular file is never
    replaced without overwrite=True; recognise None accepts any folder (for callers' own work folders).

        with atomic_folder("out/model") as tmp:
            (tmp / "config.json").write_text(...)
    """
    from pathlib import Path

    folder = Path(folder)
    check_replaceable(folder, what, recognise, overwrite, writer)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.partial-"))
    try:
        yield tmp
        for path in tmp.iterdir():
            os.chmod(path, 0o644)  # mkdtemp makes a private folder; checkpoints are for everyone
        os.chmod(tmp, 0o755)
        if folder.exists() or folder.is_symlink():
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old-"))
            os.replace(folder, old / "x")
            try:
                os.replace(tmp, folder)
            except BaseException:
                os.replace(old / "x", folder)  # the new folder did not take its place: the old one goes back
                os.rmdir(old)
                raise
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
