"""A pre-training corpus of tens of MB that every machine with the pinned requirements already holds: Python source.

The docstring corpus (corpus.py, 1.4 MB) is memorised by a model of a few million parameters within a few
hundred steps (chapter 06). This one is about 40 times larger: the source files (code, comments and
docstrings) of the Python standard library and of pinned packages that the requirements install (torch,
numpy, matplotlib), read as UTF-8 text. Nothing is downloaded and nothing is imported or run.

    build_pretrain_corpus(out_dir)   walk the sources in sorted order, write train/val as xz files + manifest
    pretrain_text(split)             the text of a split (from the committed files under data/pretrain/)

Each file becomes `# file: <source>/<relative path>` followed by its text; files are joined by a blank line.
A file goes to the validation split when crc32 of its name is 0 mod 50 (2% of the files), so validation text
comes from files the model never saw. Test folders, files over 512 KB (generated tables) and files that are
not valid UTF-8 are skipped. The files depend on the Python and package versions that built them (the
manifest records them, with every source's file count, bytes and SHA-256), so the built splits are
committed, xz-compressed, rather than rebuilt on every machine.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import lzma
import os
import platform
import sysconfig
import zlib
from pathlib import Path

from ..paths import PROJECT_ROOT
from .corpus import _stdlib_files, _write_atomic

SPLITS = ("train", "val")
SKIP_DIRS = {"test", "tests", "testing", "idlelib", "lib2to3", "turtledemo", "ensurepip", "site-packages",
             "__pycache__", "_vendor", "vendored"}
MAX_FILE_BYTES = 512 * 1024
PACKAGES = ("torch", "numpy", "matplotlib")  # pinned in requirements.txt; their sources ship in site-packages
VAL_MODULUS = 50


def _py_files(root: Path) -> list[Path]:
    return [Path(p) for p in _stdlib_files(str(root), SKIP_DIRS)]


def _sources() -> list[tuple[str, Path, str]]:
    """(name, root folder, version) of every source, the standard library first."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out = [("python", stdlib, platform.python_version())]
    for name in PACKAGES:
        dist = importlib.metadata.distribution(name)
        root = Path(dist.locate_file(name))
        if not root.is_dir():
            raise FileNotFoundError(f"build_pretrain_corpus: {name} is installed without its sources at {root}")
        out.append((name, root, dist.version))
    return out


def build_pretrain_corpus(out_dir: str | os.PathLike) -> dict:
    """Write pretrain.{train,val}.txt.xz and manifest.json into out_dir (atomically); return the manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts: dict[str, list[str]] = {s: [] for s in SPLITS}
    sources = []
    for name, root, version in _sources():
        stats = {"name": name, "version": version, "files": 0, "skipped": 0, "bytes": 0}
        for path in _py_files(root):
            rel = f"{name}/{path.relative_to(root).as_posix()}"
            data = path.read_bytes()
            if len(data) > MAX_FILE_BYTES:
                stats["skipped"] += 1
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                stats["skipped"] += 1
                continue
            split = "val" if zlib.crc32(rel.encode()) % VAL_MODULUS == 0 else "train"
            parts[split].append(f"# file: {rel}\n{text.strip()}\n")
            stats["files"] += 1
            stats["bytes"] += len(data)
        sources.append(stats)
    manifest = {"python": platform.python_version(), "implementation": platform.python_implementation(),
                "sources": sources, "val_rule": f"crc32(name) % {VAL_MODULUS} == 0", "splits": {}}
    for split in SPLITS:
        raw = "\n".join(parts[split]).encode("utf-8")
        packed = lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)
        name = f"pretrain.{split}.txt.xz"
        _write_atomic(out_dir / name, packed)
        manifest["splits"][split] = {"file": name, "files": len(parts[split]), "bytes": len(raw),
                                     "sha256": hashlib.sha256(raw).hexdigest(), "xz_bytes": len(packed)}
    _write_atomic(out_dir / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest


def pretrain_dir() -> Path:
    return PROJECT_ROOT / "data" / "pretrain"


def pretrain_manifest() -> dict:
    path = pretrain_dir() / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no pre-training corpus at {path.parent}; build it with "
                                "python -m minids.data.pretrain data/pretrain")
    return json.loads(path.read_text())


def pretrain_text(split: str = "train") -> str:
    """The text of one split, checked against the manifest's SHA-256."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    entry = pretrain_manifest()["splits"][split]
    raw = lzma.decompress((pretrain_dir() / entry["file"]).read_bytes())
    if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        raise ValueError(f"{entry['file']} does not match its manifest (SHA-256); rebuild data/pretrain")
    return raw.decode("utf-8")


if __name__ == "__main__":
    import sys

    folder = sys.argv[1] if len(sys.argv) > 1 else "data/pretrain"
    m = build_pretrain_corpus(folder)
    for s in SPLITS:
        e = m["splits"][s]
        print(f"{s}: {e['files']:,} files, {e['bytes'] / 1e6:.1f} MB ({e['xz_bytes'] / 1e6:.1f} MB as xz)")
