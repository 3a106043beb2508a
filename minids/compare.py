"""How close two computations are, printed so that a notebook's output is the same on every machine.

Chapters check that two paths compute the same function (a fast path against the readable one, minids against
transformers or peft) and print the difference. Round-off differs between CPUs and BLAS builds, so they print
the power of ten the error stays below, not the error itself.
"""

from __future__ import annotations

import math

import torch


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| (Frobenius norms), in float64: the error of `a` relative to the reference `b`."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def below(err: float) -> str:
    """The power of ten just above a round-off-sized error, as text ("< 1e-6"), or "0" for an exact match."""
    return f"< 1e{math.floor(math.log10(err)) + 1}" if err > 0 else "0"
