"""A byte n-gram model: the baseline that a trained transformer's bits per byte are read against.

    python -m minids.ngram          # fits orders 1..7 on data/pretrain's train split, scores val

An order-n model predicts a byte from the n - 1 bytes before it, by counting. Counts alone give zero to
every continuation never seen after a context, so the estimate is smoothed by interpolated absolute
discounting (Ney, Essen and Kneser 1994): take D off every seen count and give the freed mass to the
order below, all the way down to the uniform 1/256:

    p_n(x | c) = max(N(c, x) - D_n, 0) / N(c)  +  D_n * N1+(c) / N(c) * p_{n-1}(x | c')

where N(c, x) counts context c followed by x, N(c) counts c, N1+(c) counts the distinct bytes seen after c,
c' is c without its oldest byte, and D_n = n1 / (n1 + 2 n2) from the numbers of n-grams seen once and twice.
A context never seen hands its whole mass down. Everything is vectorised with numpy: every n-gram is one
int64 key (n <= 7 bytes), counted with np.unique and looked up with np.searchsorted.
"""

from __future__ import annotations

import math

import numpy as np

MAX_ORDER = 7  # 7 bytes = 56 bits: an n-gram still fits one int64 key


def _keys(a: np.ndarray, n: int) -> np.ndarray:
    """The int64 key of every window of n bytes of `a` (oldest byte in the high bits)."""
    m = len(a) - n + 1
    k = np.zeros(max(m, 0), dtype=np.int64)
    for j in range(n):
        k = (k << 8) | a[j:j + m].astype(np.int64)
    return k


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values[i] where sorted_keys[i] == query, else 0."""
    i = np.searchsorted(sorted_keys, queries)
    i = np.minimum(i, len(sorted_keys) - 1)
    found = sorted_keys[i] == queries
    return np.where(found, values[i], 0)


class ByteNGram:
    """Interpolated absolute discounting over bytes, orders 1..order (order 1 = byte frequencies)."""

    def __init__(self, order: int) -> None:
        if not isinstance(order, int) or not 1 <= order <= MAX_ORDER:
            raise ValueError(f"ByteNGram: order must be an int in 1..{MAX_ORDER}, got {order!r}")
        self.order = order
        self.tables: list[dict] = []

    def fit(self, data: bytes) -> "ByteNGram":
        a = np.frombuffer(data, dtype=np.uint8)
        if len(a) < self.order:
            raise ValueError(f"ByteNGram.fit: need at least {self.order} bytes, got {len(a)}")
        self.tables = []
        for n in range(1, self.order + 1):
            grams, counts = np.unique(_keys(a, n), return_counts=True)
            contexts, inverse = np.unique(grams >> 8, return_inverse=True)
            n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
            self.tables.append({
                "grams": grams, "counts": counts, "contexts": contexts,
                "context_counts": np.bincount(inverse, weights=counts).astype(np.int64),
                "continuations": np.bincount(inverse).astype(np.int64),
                # Ney's estimate; with no n-gram seen once it would be 0 and leave an unseen byte no mass at
                # all (infinite bits), so such an order falls back to 0.5, as one with neither count does
                "D": n1 / (n1 + 2 * n2) if n1 > 0 else 0.5,
            })
        return self

    def probs(self, data: bytes) -> np.ndarray:
        """p(byte i | the bytes before it) for every byte of `data` (a text scored from its start)."""
        if not self.tables:
            raise RuntimeError("ByteNGram: call fit(train_bytes) first")
        pad = self.order - 1  # byte 0 before the start: a context never seen in text, so the mass backs off
        a = np.concatenate([np.zeros(pad, np.uint8), np.frombuffer(data, dtype=np.uint8)])
        p = np.full(len(a) - pad, 1 / 256)
        for n, t in enumerate(self.tables, start=1):
            grams = _keys(a[pad - n + 1:], n)  # the n-gram ending at each scored byte
            c = _lookup(t["grams"], t["counts"], grams)
            ctx = grams >> 8
            total = _lookup(t["contexts"], t["context_counts"], ctx)
            kinds = _lookup(t["contexts"], t["continuations"], ctx)
            seen = total > 0
            safe = np.maximum(total, 1)
            mixed = np.maximum(c - t["D"], 0) / safe + t["D"] * kinds / safe * p
            p = np.where(seen, mixed, p)
        return p

    def bits_per_byte(self, data: bytes) -> float:
        return float(-np.log2(self.probs(data)).mean())


def main(argv=None) -> None:
    import argparse
    import platform
    import time

    from .data.pretrain import pretrain_text
    from .results import write_json_atomic
    from .paths import PROJECT_ROOT

    p = argparse.ArgumentParser(description="byte n-gram bits per byte on the pre-training corpus")
    p.add_argument("--orders", type=int, nargs="+", default=list(range(1, MAX_ORDER + 1)))
    p.add_argument("--out", default=str(PROJECT_ROOT / "data" / "results" / "byte_ngram.json"))
    args = p.parse_args(argv)
    train, val = (pretrain_text(s).encode("utf-8") for s in ("train", "val"))
    records = []
    for n in args.orders:
        tic = time.perf_counter()
        bpb = ByteNGram(n).fit(train).bits_per_byte(val)
        records.append({"order": n, "val_bpb": bpb, "seconds": time.perf_counter() - tic})
        print(f"order {n}: {bpb:.4f} bits/byte ({records[-1]['seconds']:.0f} s)", flush=True)
    best = min(records, key=lambda r: r["val_bpb"])
    write_json_atomic(args.out, {
        "record": "byte_ngram", "command": "python -m minids.ngram", "train_bytes": len(train),
        "val_bytes": len(val), "python": platform.python_version(), "orders": records, "best": best,
        "note": "interpolated absolute discounting (D = n1 / (n1 + 2 n2) per order), byte 0 padding before the text",
        "uniform_bpb": math.log2(256),
    })
    print(f"best: order {best['order']}, {best['val_bpb']:.4f} bits/byte -> {args.out}")


if __name__ == "__main__":
    main()
