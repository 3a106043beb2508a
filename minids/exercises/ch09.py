"""Chapter 09's checker: Eq. 1 of the paper, the near-optimal batch size and learning rate from the budget."""

from __future__ import annotations

import math

from .. import scaling
from ._contract import checker

# the paper's fitted range, the 7B's and the 67B's budgets (C = M * 2e12 with Eq. 2's M), and one in between
_BUDGETS = (1e17, 2e19, 1e21, 8.46e22, 9.95e23)


@checker("eq1")
def check_eq1(fn) -> None:
    """fn(C) -> (B_opt in tokens, eta_opt): B_opt = 0.2920 C^0.3271, eta_opt = 0.3118 C^-0.1250, compared with
    minids.scaling at budgets from the paper's fitted range to the 67B's, to 1e-6 relative."""
    for C in _BUDGETS:
        got = fn(C)
        assert isinstance(got, tuple) and len(got) == 2, \
            f"return a pair (batch size in tokens, learning rate), got {type(got).__name__} {got!r:.60}"
        batch, lr = float(got[0]), float(got[1])
        want_batch, want_lr = float(scaling.optimal_batch_tokens(C)), float(scaling.optimal_lr(C))
        if not math.isclose(batch, want_batch, rel_tol=1e-6):
            hint = ""
            if math.isclose(batch * 4096, want_batch, rel_tol=1e-6):
                hint = ": that is in sequences of 4,096 tokens; Eq. 1 gives tokens"
            elif math.isclose(batch, want_lr, rel_tol=1e-6):
                hint = ": the pair is (batch, learning rate), in that order"
            raise AssertionError(f"at C = {C:.3g}: B_opt is {batch:.6g}, expected {want_batch:.6g} tokens{hint}")
        if not math.isclose(lr, want_lr, rel_tol=1e-6):
            hint = ""
            if lr > 0 and math.isclose(math.log(lr / 0.3118) / math.log(C), 0.1250, rel_tol=1e-3):
                hint = ": the learning rate falls as compute grows (exponent -0.1250)"
            raise AssertionError(f"at C = {C:.3g}: eta_opt is {lr:.6g}, expected {want_lr:.6g}{hint}")
