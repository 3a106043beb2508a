"""A small English corpus that every machine already has: the docstrings of the Python standard library.

`build_corpus()` walks the standard library's source files in sorted order, parses each with `ast` (nothing
is imported or executed), and keeps the docstrings of modules, classes and functions, cleaned by
`ast.get_docstring`, de-duplicated in order of first appearance. A module goes to the validation split when
crc32 of its relative path is 0 mod 10 (about 10% of the modules), so validation text comes from modules the
model never saw, not from the tail of the same files.

Docstrings change between Python versions, so the corpus depends on the Python that built it. The files
committed under data/corpus/ (see data/README.md) were built once and are what `corpus_tokens` reads; only
where they are missing (minids installed without the repository) is the corpus rebuilt, into
~/.cache/minids/corpus, from the running Python, and the manifest records which version that was.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import platform
import sysconfig
import tempfile
import zlib
from pathlib import Path

import torch

SPLITS = ("train", "val")
SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "turtledemo", "ensurepip", "site-packages", "__pycache__"}
SEPARATOR = "\n\n"

REPO_CORPUS_DIR = Path(__file__).resolve().parents[2] / "data" / "corpus"
CACHE_CORPUS_DIR = Path(os.environ.get("MINIDS_CACHE", Path.home() / ".cache" / "minids")) / "corpus"


def _stdlib_files(root: str, skip_dirs: set[str] = SKIP_DIRS) -> list[str]:
    """The .py files under root in sorted order, leaving out the folders named in skip_dirs."""
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in skip_dirs and not d.startswith("config-"))
        found += [os.path.join(directory, f) for f in sorted(files) if f.endswith(".py")]
    return found


def _docstrings(source: bytes) -> list[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):  # a few files are templates or deliberately broken
        return []
    docs = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= 20:  # one-word docstrings add little English
                docs.append(doc.strip())
    return docs


def build_corpus(out_dir: str | os.PathLike, stdlib: str | None = None) -> dict:
    """Write stdlib_docstrings.{train,val}.txt and manifest.json into out_dir; return the manifest."""
    root = stdlib or sysconfig.get_paths()["stdlib"]
    seen: set[str] = set()
    texts: dict[str, list[str]] = {split: [] for split in SPLITS}
    n_modules = {split: 0 for split in SPLITS}
    for path in _stdlib_files(root):
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        split = "val" if zlib.crc32(rel.encode()) % 10 == 0 else "train"
        with open(path, "rb") as f:
            docs = [d for d in _docstrings(f.read()) if d not in seen]
        seen.update(docs)
        if docs:
            n_modules[split] += 1
            texts[split] += docs
    os.makedirs(out_dir, exist_ok=True)
    manifest = {
        "source": "docstrings of the Python standard library (ast.get_docstring, deduplicated)",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "splits": {},
    }
    for split in SPLITS:
        data = SEPARATOR.join(texts[split]).encode("utf-8")
        _write_atomic(Path(out_dir) / f"stdlib_docstrings.{split}.txt", data)
        manifest["splits"][split] = {
            "file": f"stdlib_docstrings.{split}.txt", "bytes": len(data), "docstrings": len(texts[split]),
            "modules": n_modules[split], "sha256": hashlib.sha256(data).hexdigest(),
        }
    _write_atomic(Path(out_dir) / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)  # mkstemp makes files private; these are data for everyone
    os.replace(tmp, path)


def corpus_dir() -> Path:
    """The committed corpus if the repository is here, else a cache built on first use."""
    if (REPO_CORPUS_DIR / "manifest.json").is_file():
        return REPO_CORPUS_DIR
    if not (CACHE_CORPUS_DIR / "manifest.json").is_file():
        build_corpus(CACHE_CORPUS_DIR)
    return CACHE_CORPUS_DIR


def corpus_manifest() -> dict:
    with open(corpus_dir() / "manifest.json", encoding="utf-8") as f:
        return json.load(f)


def corpus_text(split: str = "train") -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return (corpus_dir() / f"stdlib_docstrings.{split}.txt").read_text(encoding="utf-8")


def corpus_tokens(split: str = "train") -> torch.Tensor:
    """The corpus split as byte-level token ids: a 1-d torch.long tensor (ByteTokenizer, vocab 256)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    data = (corpus_dir() / f"stdlib_docstrings.{split}.txt").read_bytes()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


def lm_batches(tokens: torch.Tensor, batch_size: int, seq_len: int):
    """A get_batch(step, generator) for train(): random windows of seq_len + 1 tokens, shifted by one.

    inputs[i] = tokens[s_i : s_i + seq_len], targets[i] = tokens[s_i + 1 : s_i + seq_len + 1], with the
    starts s_i drawn from `generator` (so a saved generator state replays the same batches).
    """
    if tokens.ndim != 1 or tokens.dtype != torch.long:
        raise ValueError(f"tokens must be a 1-d torch.long tensor, got {tuple(tokens.shape)} {tokens.dtype}")
    if batch_size <= 0 or seq_len <= 0:
        raise ValueError(f"batch_size ({batch_size}) and seq_len ({seq_len}) must be positive")
    if tokens.numel() < seq_len + 2:
        raise ValueError(f"{tokens.numel()} tokens are too few for windows of seq_len + 1 = {seq_len + 1}")
    offsets = torch.arange(seq_len + 1)

    def get_batch(step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, tokens.numel() - seq_len - 1, (batch_size, 1), generator=generator)
        window = tokens[starts + offsets]  # (b, seq_len + 1)
        return window[:, :-1], window[:, 1:]

    return get_batch


def lm_eval_windows(tokens: torch.Tensor, n_windows: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed, evenly spaced windows for evaluation: (inputs, targets), each (n_windows, seq_len)."""
    if tokens.numel() < seq_len + 2:
        raise ValueError(f"{tokens.numel()} tokens are too few for windows of seq_len + 1 = {seq_len + 1}")
    starts = torch.linspace(0, tokens.numel() - seq_len - 1, n_windows).long()[:, None]
    window = tokens[starts + torch.arange(seq_len + 1)]
    return window[:, :-1], window[:, 1:]
