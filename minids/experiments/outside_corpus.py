"""Score the miniature on Python it never saw the like of: installed packages that its corpus does not contain.

    nice -n 10 python -m minids.experiments.outside_corpus      # a few minutes on a CPU
    python -m minids.experiments.outside_corpus --max-bytes 4000 --order 3 --out /tmp/x.json   # seconds

`minids-py-16m`'s held-out 0.762 bits per byte is measured on held-out *files* of the four sources it trained on
(the standard library, torch, numpy, matplotlib: data/pretrain's manifest). A user will run it on other code. This
command takes the installed sources of packages that requirements.txt installs and the corpus holds none of
(peft, transformers' Llama model, jupyter_server, accelerate), and scores the checkpoint on them exactly as the
held-out figure was scored, beside the byte n-gram trained as the in-corpus baseline was (minids.ngram, on the
corpus' train split) and scored on the same text.

Rules, fixed before the run:
- a package's files are its .py files under the folder named in SOURCES (test folders and files over 512 KB left
  out, as the corpus did), ordered by crc32 of their path relative to site-packages (a fixed order that does not
  favour `__init__.py` or the start of the alphabet), taken in that order while they fit in `max_bytes` (a file
  that would overflow it is passed over);
- each file is written as the corpus writes one (`# file: <path relative to site-packages>` then its text), the
  files of a package joined, tokenized with the checkpoint's tokenizer, documents joined by eos
  (`miniature.token_stream`), cut into consecutive 1,024-token windows (`miniature.val_windows`) and scored with
  `miniature.held_out_loss`: summed cross-entropy in bits over the UTF-8 bytes of the scored tokens;
- the n-gram (order 7 by default, the best order on the in-corpus held-out files) is fitted on the corpus' train
  split and scores each package's text from its start, bits over every byte.
The result file records every file's package, version, path and size, so the text can be rebuilt.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import platform
import time
import zlib
from pathlib import Path

import torch

from ..paths import PROJECT_ROOT
from ..results import write_json_atomic
from .miniature import held_out_loss, token_bytes, token_stream, val_windows

CHECKPOINT = PROJECT_ROOT / "data" / "checkpoints" / "minids-py-16m"
OUT = PROJECT_ROOT / "data" / "results" / "outside_corpus.json"
# (distribution, folder under site-packages): packages requirements.txt installs that the corpus does not hold
SOURCES = (("peft", "peft"), ("transformers", "transformers/models/llama"),
           ("jupyter_server", "jupyter_server"), ("accelerate", "accelerate"))
MAX_BYTES = 64_000  # per package, at most: about 18 windows of 1,024 tokens each
SEQ_LEN = 1024
ORDER = 7


def site_packages(distribution: str) -> Path:
    """The folder an installed distribution's top-level package sits in."""
    dist = importlib.metadata.distribution(distribution)
    return Path(dist.locate_file(""))


def corpus_sources() -> set[str]:
    """The source names data/pretrain's corpus was built from (python, torch, numpy, matplotlib)."""
    from ..data.pretrain import pretrain_manifest

    return {s["name"] for s in pretrain_manifest()["sources"]}


def pick_files(distribution: str, folder: str, max_bytes: int) -> list[dict]:
    """The files of one source in the fixed order above, until max_bytes; each as {package, version, path, bytes}."""
    from ..data.corpus import _stdlib_files
    from ..data.pretrain import MAX_FILE_BYTES, SKIP_DIRS

    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    top = folder.split("/")[0]
    if top in corpus_sources():
        raise ValueError(f"{top!r} is in the pre-training corpus ({sorted(corpus_sources())}); pick a package it lacks")
    base = site_packages(distribution)
    root = base / folder
    if not root.is_dir():
        raise FileNotFoundError(f"{distribution}: no sources at {root}")
    version = importlib.metadata.version(distribution)
    files = []
    for path in map(Path, _stdlib_files(str(root), SKIP_DIRS)):
        data = path.read_bytes()
        if len(data) > MAX_FILE_BYTES:
            continue
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        rel = path.relative_to(base).as_posix()
        files.append({"package": distribution, "version": version, "path": rel, "bytes": len(data)})
    files.sort(key=lambda f: (zlib.crc32(f["path"].encode()), f["path"]))
    chosen, total = [], 0
    for f in files:  # a file that would overflow the budget is passed over, so a package never exceeds it
        if total + f["bytes"] <= max_bytes:
            chosen.append(f)
            total += f["bytes"]
    if not chosen:
        raise ValueError(f"{distribution}: no file of {folder} fits in max_bytes={max_bytes}")
    return chosen


def source_text(files: list[dict]) -> str:
    """The chosen files as the corpus writes files: a `# file:` line, the text, files joined by a blank line."""
    parts = []
    for f in files:
        text = (site_packages(f["package"]) / f["path"]).read_text(encoding="utf-8")
        parts.append(f"# file: {f['path']}\n{text.strip()}\n")
    return "\n".join(parts)


def score(model, tokenizer, ngram, text: str, seq_len: int = SEQ_LEN) -> dict:
    """Bits per byte of the model (1,024-token windows) and of the n-gram on one text."""
    stream = token_stream(text, tokenizer)
    windows = val_windows(stream, seq_len)
    if len(windows) == 0:
        raise ValueError(f"the text is {len(stream)} tokens, shorter than one window of {seq_len + 1}")
    nbytes = token_bytes(tokenizer, model.config.vocab_size)
    with torch.no_grad():
        model_score = held_out_loss(model, windows, nbytes, batch=4)
    raw = text.encode("utf-8")
    return {"model_bpb": model_score["val_bpb"], "model_nats_per_token": model_score["val_loss"],
            "windows": len(windows), "scored_tokens": model_score["val_tokens"],
            "scored_bytes": model_score["val_bytes"], "ngram_bpb": ngram.bits_per_byte(raw), "text_bytes": len(raw)}


def run(checkpoint=CHECKPOINT, sources=SOURCES, max_bytes: int = MAX_BYTES, order: int = ORDER,
        seq_len: int = SEQ_LEN, ngram_train_bytes: int | None = None, model=None, tokenizer=None, ngram=None,
        log=print) -> dict:
    """Score every source; return the record (model and n-gram bits per byte per package and over all).
    model, tokenizer, ngram: given ones are used as they are (the tests pass tiny ones); otherwise the checkpoint's,
    and a ByteNGram(order) fitted on the corpus' train split (its first ngram_train_bytes bytes, if given)."""
    from ..data.pretrain import pretrain_text
    from ..model import DeepSeekLM
    from ..ngram import ByteNGram
    from ..tokenizer import Tokenizer

    t0 = time.perf_counter()
    if model is None:
        model = DeepSeekLM.from_hf(checkpoint, dtype=torch.float32).eval()  # stored in bf16, scored in float32
    if tokenizer is None:
        tokenizer = Tokenizer.from_dir(checkpoint)
    if ngram is None:
        train = pretrain_text("train").encode("utf-8")
        if ngram_train_bytes is not None:
            train = train[:ngram_train_bytes]
        ngram = ByteNGram(order).fit(train)
        ngram_train_bytes = len(train)
        log(f"byte {order}-gram fitted on {len(train):,} bytes of the corpus' train split "
            f"({time.perf_counter() - t0:.0f} s so far)")
    order = ngram.order
    packages, files = [], []
    totals = {"model_bits": 0.0, "scored_bytes": 0, "ngram_bits": 0.0, "text_bytes": 0}
    for distribution, folder in sources:
        chosen = pick_files(distribution, folder, max_bytes)
        s = score(model, tokenizer, ngram, source_text(chosen), seq_len)
        s.update(package=distribution, folder=folder, version=chosen[0]["version"], files=len(chosen))
        packages.append(s)
        files += chosen
        totals["model_bits"] += s["model_bpb"] * s["scored_bytes"]
        totals["scored_bytes"] += s["scored_bytes"]
        totals["ngram_bits"] += s["ngram_bpb"] * s["text_bytes"]
        totals["text_bytes"] += s["text_bytes"]
        log(f"{folder:28s} {len(chosen):3d} files {s['text_bytes']:>8,} bytes {s['windows']:3d} windows: "
            f"model {s['model_bpb']:.3f}, byte {order}-gram {s['ngram_bpb']:.3f} bits/byte "
            f"({time.perf_counter() - t0:.0f} s so far)")
    return {
        "record": "outside_corpus", "checkpoint": Path(checkpoint).name, "corpus_sources": sorted(corpus_sources()),
        "seq_len": seq_len, "max_bytes_per_package": max_bytes, "ngram_order": order, "ngram_train_bytes": ngram_train_bytes,
        "packages": packages,
        "all": {"model_bpb": totals["model_bits"] / totals["scored_bytes"],
                "ngram_bpb": totals["ngram_bits"] / totals["text_bytes"],
                "scored_bytes": totals["scored_bytes"], "text_bytes": totals["text_bytes"]},
        "files": files, "python": platform.python_version(), "torch": torch.__version__,
        "seconds": time.perf_counter() - t0,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(CHECKPOINT), help="a Hugging Face folder (weights + tokenizer)")
    p.add_argument("--max-bytes", type=int, default=MAX_BYTES, help="bytes of source per package (at most)")
    p.add_argument("--order", type=int, default=ORDER, help="the byte n-gram's order (1..7)")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    record = run(args.checkpoint, max_bytes=args.max_bytes, order=args.order)
    command = "python -m minids.experiments.outside_corpus"
    defaults = {"--checkpoint": str(CHECKPOINT), "--max-bytes": MAX_BYTES, "--order": ORDER, "--out": str(OUT)}
    given = {"--checkpoint": args.checkpoint, "--max-bytes": args.max_bytes, "--order": args.order, "--out": args.out}
    command += "".join(f" {k} {v}" for k, v in given.items() if str(v) != str(defaults[k]))
    record["command"] = command
    write_json_atomic(args.out, record)
    a = record["all"]
    print(f"all: model {a['model_bpb']:.3f}, byte {args.order}-gram {a['ngram_bpb']:.3f} bits/byte "
          f"({record['seconds']:.0f} s) -> {args.out}")


if __name__ == "__main__":
    main()
