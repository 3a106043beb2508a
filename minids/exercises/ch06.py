"""Checkers for chapter 06 (depth vs width): one hop of hop_k, and the KV cache a shape pays per token."""

from __future__ import annotations

import torch

from ..accounting import kv_cache_bytes
from ..config import ModelConfig
from ..data.hop import HopKTask
from ._contract import checker, expect_equal

__all__ = ["check_one_hop", "check_kv_bytes_per_token"]


def _strings() -> list[list[int]]:
    """The chapter's worked example (c a b d a c b a d as 2 0 1 3 0 2 1 0 3), then random hop_k strings."""
    task = HopKTask(n=25)
    randoms = task.random_strings(6, 24, torch.Generator().manual_seed(6)).tolist()
    return [[2, 0, 1, 3, 0, 2, 1, 0, 3]] + randoms


@checker("one_hop")
def check_one_hop(fn) -> None:
    """fn(chars) -> for every position p of the list: q + 1 for the last q < p with chars[q] == chars[p], or -1."""
    task = HopKTask()
    for chars in _strings():
        want = task.jump(torch.tensor([chars]))[0].tolist()
        got = fn(list(chars))
        assert isinstance(got, (list, tuple)) and len(got) == len(chars), (
            f"one_hop({chars}) should return a list of {len(chars)} positions, got {got!r}")
        for p, (g, w) in enumerate(zip(got, want)):
            if g != w:
                hint = ""
                if w >= 0 and g == w - 1:
                    hint = " (that is q itself: the hop moves one past the earlier occurrence, to q + 1)"
                elif g == p + 1:
                    hint = " (the search must stop before p: position p itself does not count)"
                elif w == -1:
                    hint = " (no earlier occurrence: the answer is -1)"
                else:
                    hint = " (the LAST earlier occurrence, the one nearest to p)"
                raise AssertionError(f"one_hop({chars}) at position {p}: got {g}, expected {w}{hint}")


@checker("kv_bytes_per_token")
def check_kv_bytes_per_token(fn) -> None:
    """fn(config) -> bytes of KV cache one token adds, in bf16 (2 bytes per value), summed over the layers."""
    configs = {name: ModelConfig.preset(name) for name in ("deepseek-llm-7b", "deepseek-llm-67b", "llama-2-70b")}
    configs["L16 d256 (GQA 8/4)"] = ModelConfig(vocab_size=256, d_model=256, n_layers=16, n_heads=8, n_kv_heads=4,
                                                d_ff=216)
    for name, cfg in configs.items():
        want = kv_cache_bytes(cfg, 1)
        got = fn(cfg)
        if got != want and got == want // 2:
            raise AssertionError(f"{name}: got {got:,} bytes, expected {want:,}: half of it (keys AND values)")
        if got != want and got == want * cfg.n_heads // cfg.n_kv_heads:
            raise AssertionError(f"{name}: got {got:,} bytes, expected {want:,}: the cache holds the "
                                 f"{cfg.n_kv_heads} key/value heads, not the {cfg.n_heads} query heads")
        expect_equal(got, want, f"bytes per token for {name}")
