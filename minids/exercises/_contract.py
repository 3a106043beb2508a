"""The one contract every exercise checker keeps, so that a chapter runs clean with the stubs in place.

    @checker("rotate_half")
    def check_rotate_half(fn):
        x = torch.arange(8.0).reshape(1, 8)
        expect_close(fn(x), rotate_half(x), "rotate_half(x)")

A checker built this way, called on the learner's function:
- prints one line ("rotate_half: correct ...") and returns True when every assertion holds;
- raises AssertionError with a hint that says what differs (a shape, a value at a position, a count);
- prints "rotate_half: not attempted yet" and returns False when the learner's code still raises
  NotImplementedError (the stub as the chapter ships it).
"""

from __future__ import annotations

import functools

import torch

__all__ = ["checker", "expect_close", "expect_equal", "expect_shape"]


def checker(name: str, success: str = "correct"):
    """Wrap `check(fn, ...)` with the contract above; `name` is what the printed line calls the exercise."""

    def wrap(check):
        @functools.wraps(check)
        def run(*args, **kwargs) -> bool:
            try:
                check(*args, **kwargs)
            except NotImplementedError:
                print(f"{name}: not attempted yet (replace the `raise NotImplementedError` with your code)")
                return False
            print(f"{name}: {success}")
            return True

        return run

    return wrap


def expect_shape(got, shape, what: str) -> None:
    """AssertionError naming both shapes when `got` is not a tensor of `shape`."""
    assert isinstance(got, torch.Tensor), f"{what} should be a torch.Tensor, got {type(got).__name__}"
    assert tuple(got.shape) == tuple(shape), f"{what} has shape {tuple(got.shape)}, expected {tuple(shape)}"


def expect_close(got, want: torch.Tensor, what: str, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """AssertionError naming the shape, or the first position where the values differ and both values."""
    expect_shape(got, want.shape, what)
    assert got.dtype == want.dtype, f"{what} has dtype {got.dtype}, expected {want.dtype}"
    close = torch.isclose(got, want, rtol=rtol, atol=atol)
    if not bool(close.all()):
        where = tuple(int(i) for i in (~close).nonzero()[0])
        raise AssertionError(f"{what} differs at index {where}: got {got[where].item():.6g}, "
                             f"expected {want[where].item():.6g} ({int((~close).sum())} of {close.numel()} values differ)")


def expect_equal(got, want, what: str) -> None:
    """AssertionError showing both values when got != want (counts, sizes, plain numbers)."""
    assert got == want, f"{what} is {got!r}, expected {want!r}"
