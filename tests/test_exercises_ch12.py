"""Chapter 12's checkers accept the reference answers and reject the typical mistakes with a hint."""

import pytest
import torch

from minids.exercises import check_rolling_slot, check_window_mask


def window_mask(T, W):
    q, s = torch.arange(T)[:, None], torch.arange(T)[None, :]
    return (s <= q) & (s > q - W)


def stub(*args):
    raise NotImplementedError


@pytest.mark.parametrize("wrong, hint", [
    (lambda T, W: window_mask(T, W + 1), "W \\+ 1 keys"),  # the paper's counting
    (lambda T, W: window_mask(T, W).T, "transposed"),
    (lambda T, W: (torch.arange(T)[:, None] - torch.arange(T)[None, :]).abs() < W, "query 0, key 1"),  # not causal
    (lambda T, W: window_mask(T, W).int(), "dtype"),
])
def test_window_mask_rejects(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check_window_mask(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda p, W: (p + 1) % W, "expected 0"),  # off by one
    (lambda p, W: min(p, W - 1), "expected 0"),  # a buffer that stops at its last slot
    (lambda p, W: p % (W + 1), "outside"),
])
def test_rolling_slot_rejects(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check_rolling_slot(wrong)


def test_reference_answers_pass_and_stubs_are_not_attempted(capsys):
    assert check_window_mask(window_mask) is True and check_rolling_slot(lambda p, W: p % W) is True
    assert check_window_mask(stub) is False and check_rolling_slot(stub) is False
    out = capsys.readouterr().out
    assert out.count("correct") == 2 and out.count("not attempted yet") == 2
