"""Checkers for chapter 11 (Mixture of Experts): the 16B's top-k gates and the expert-level balance loss.

Both compare the learner's function with minids' own (`minids.moe.route`, `minids.moe.balance_loss`) on
seeded router logits, and say what differs: a shape, the experts chosen by a token, a gate, a row sum.
"""

from __future__ import annotations

import torch

from ._contract import checker, expect_close, expect_shape

__all__ = ["check_topk_gates", "check_balance_loss"]


def _logits(T: int = 12, E: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, E, generator=g) * 1.5


def _by_expert(experts: torch.Tensor, gates: torch.Tensor):
    # each token's (expert, gate) pairs sorted by expert id: the order of the top-k does not matter
    order = experts.argsort(dim=-1)
    return experts.gather(-1, order), gates.gather(-1, order)


@checker("topk_gates")
def check_topk_gates(fn):
    """fn(logits (T, E), k) -> (experts (T, k) long, gates (T, k) float32): softmax over the experts in
    float32, the k largest scores per token, and the gates = those scores, NOT renormalised (deepseek-moe-16b)."""
    from minids.moe import route

    for T, E, k, seed in ((12, 8, 2, 0), (5, 16, 6, 1)):
        logits = _logits(T, E, seed).to(torch.bfloat16)  # as under autocast: the scores must be float32
        out = fn(logits, k)
        assert isinstance(out, tuple) and len(out) == 2, "return a pair (experts, gates)"
        experts, gates = out
        expect_shape(experts, (T, k), "experts")
        expect_shape(gates, (T, k), "gates")
        assert gates.dtype == torch.float32, f"gates have dtype {gates.dtype}: compute the softmax in float32"
        want = route(logits, k)
        got_e, got_g = _by_expert(experts.long(), gates)
        want_e, want_g = _by_expert(want.experts, want.weights)
        wrong = (got_e != want_e).any(-1).nonzero()
        if len(wrong):
            t = int(wrong[0])
            raise AssertionError(f"token {t} chose experts {sorted(got_e[t].tolist())}, expected "
                                 f"{sorted(want_e[t].tolist())} (the k largest softmax scores over the experts)")
        sums = got_g.sum(-1)
        if torch.allclose(sums, torch.ones_like(sums), atol=1e-4) and not torch.allclose(
                want_g.sum(-1), torch.ones_like(sums), atol=1e-4):
            raise AssertionError("every row of gates sums to 1: you renormalised them; the 16B keeps the chosen "
                                 "scores as they are (their sum is below 1)")
        expect_close(got_g, want_g, "gates (sorted by expert)", rtol=1e-4, atol=1e-6)


@checker("balance_loss")
def check_balance_loss(fn):
    """fn(experts (T, k), scores (T, E)) -> a 0-d tensor: sum_i f_i P_i with f_i = N'/(K' T) * #{t chose i}
    and P_i = the mean of s_{i,t} over the T tokens (N' = E routed experts, K' = k chosen per token)."""
    from minids.moe import balance_loss, route

    for T, E, k, seed in ((48, 8, 2, 0), (30, 16, 6, 3)):
        r = route(_logits(T, E, seed), k)
        got = fn(r.experts, r.scores)
        assert isinstance(got, torch.Tensor), f"return a tensor, got {type(got).__name__}"
        want = balance_loss(r)
        got = got.reshape(()) if got.numel() == 1 else got
        expect_shape(got, (), f"the loss (T={T}, E={E}, k={k})")
        ratio = got.item() / want.item()
        for factor, what in ((k / E, f"N'/K' = {E}/{k}"), (1 / E, f"N' = {E}"), (1 / k, f"1/K' = 1/{k}")):
            if abs(ratio - factor) < 1e-4 * factor:
                raise AssertionError(f"got {got.item():.5f}, {factor:.4g} times the expected {want.item():.5f}: "
                                     f"the scale of f_i is off by {what} (f_i = N'/(K' T) * count: an even load "
                                     "gives f_i = 1 for every expert)")
        expect_close(got.float(), want.float(), f"sum_i f_i P_i (T={T}, E={E}, k={k})", rtol=1e-4, atol=1e-6)
    # a gradient must reach the scores through P (the router learns from the loss)
    logits = _logits(48, 8, 0).requires_grad_(True)
    r = route(logits, 2)
    loss = fn(r.experts, r.scores)
    hint = "no gradient reaches the scores: compute P_i from the scores tensor itself (no .detach(), no .item())"
    assert isinstance(loss, torch.Tensor) and loss.requires_grad, hint
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0, hint
