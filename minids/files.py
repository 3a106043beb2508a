"""Reading the files a user hands in: every error names the file and says what is wrong with it.

A model folder, a checkpoint, an adapter, a tokenizer or a results file can be damaged on disk (a copy cut
short, an empty file left by a full disk, the wrong file under the right name). The libraries that read
them then fail with their own words ("incomplete metadata, file not fully covered", "Expecting value:
line 1 column 1") and no path, so in a folder of several files nobody knows which one to fetch again.
minids reads through these helpers instead, which raise `DamagedFileError` (a ValueError) naming the file:

    read_json(path, expect=dict)       a JSON file; empty, cut short, or of the wrong kind -> named error
    open_safetensors(path)             safetensors' safe_open (header only), damaged file -> named error
    load_safetensors(path)             every tensor of a *.safetensors file, the same way
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any


class DamagedFileError(ValueError):
    """A file is there but cannot be read as what it should be: the message names it and what is wrong."""


_KINDS = {dict: "a JSON object ({...})", list: "a JSON list ([...])"}


def read_json(path: str | os.PathLike, expect: type | None = None, what: str = "JSON file") -> Any:
    """The JSON in `path`; `expect` (dict or list) is the kind of value the caller needs at the top level."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a folder, not a {what}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path} (expected a {what})")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not text.strip():
        raise DamagedFileError(f"{path} is empty (expected a {what}); write it again or fetch it again")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        ends = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
        cut = " (the file ends there: it was cut short)" if ends else ""
        raise DamagedFileError(f"{path} is not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
                               f"{cut}; write it again or fetch it again") from None
    if expect is not None and not isinstance(value, expect):
        raise DamagedFileError(f"{path} holds {_describe(value)}, but a {what} is {_KINDS.get(expect, expect)}")
    return value


def _describe(value: Any) -> str:
    for kind, text in _KINDS.items():
        if isinstance(value, kind):
            return text
    return f"a JSON {type(value).__name__} ({value!r:.40})"


def _damaged_safetensors(path: str, exc: Exception) -> DamagedFileError:
    size = os.path.getsize(path)
    state = "is empty (0 bytes)" if size == 0 else f"is not a complete safetensors file ({size:,} bytes)"
    return DamagedFileError(f"{path} {state}: {exc}. It was probably cut short while being written or copied; "
                            "write it again or fetch it again")


@contextlib.contextmanager
def open_safetensors(path: str | os.PathLike):
    """safetensors.safe_open(path, framework="pt"), with a damaged file named (the header is read at once)."""
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path} (expected a *.safetensors file)")
    try:
        handle = safe_open(path, framework="pt")
    except SafetensorError as exc:
        raise _damaged_safetensors(path, exc) from None
    with handle as f:
        yield f


def load_safetensors(path: str | os.PathLike) -> dict:
    """Every tensor of a *.safetensors file (safetensors.torch.load_file), with a damaged file named."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path} (expected a *.safetensors file)")
    try:
        return load_file(path)
    except SafetensorError as exc:
        raise _damaged_safetensors(path, exc) from None
