"""Chapter 07's checkers accept the reference solutions and reject typical mistakes."""

import pytest
import torch

from minids import count_params, kv_cache_bytes
from minids.exercises import check_decode_floor_ms, check_top_k_filter


def top_k_filter(logits, k):
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def decode_floor_ms(cfg, batch, context, bandwidth):
    return (2 * count_params(cfg).total + kv_cache_bytes(cfg, context, batch=batch)) / bandwidth * 1e3


def test_top_k_accepts_the_reference_and_rejects_mistakes():
    assert check_top_k_filter(top_k_filter) is True

    def keeps_one_less(logits, k):  # <= instead of <: drops the k-th itself
        kth = logits.topk(k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits <= kth, float("-inf"))

    def wrong_axis(logits, k):  # the k largest of each column
        kth = logits.topk(min(k, logits.shape[0]), dim=0).values[-1:]
        return logits.masked_fill(logits < kth, float("-inf"))

    def probabilities(logits, k):  # returns softmax instead of logits
        return top_k_filter(logits, k).softmax(-1)

    for wrong in (keeps_one_less, wrong_axis, probabilities):
        with pytest.raises(AssertionError):
            check_top_k_filter(wrong)


def test_decode_floor_accepts_the_reference_and_rejects_mistakes():
    assert check_decode_floor_ms(decode_floor_ms) is True
    with pytest.raises(AssertionError, match="weights only"):
        check_decode_floor_ms(lambda cfg, b, t, bw: 2 * count_params(cfg).total / bw * 1e3)
    with pytest.raises(AssertionError, match="reads one cache"):
        check_decode_floor_ms(lambda cfg, b, t, bw: (2 * count_params(cfg).total + kv_cache_bytes(cfg, t)) / bw * 1e3)
    with pytest.raises(AssertionError, match="expected"):  # float32 weights
        check_decode_floor_ms(lambda cfg, b, t, bw: (4 * count_params(cfg).total + kv_cache_bytes(cfg, t, batch=b)) / bw * 1e3)


def test_stubs_are_not_attempted(capsys):
    def stub(*args):
        raise NotImplementedError

    assert check_top_k_filter(stub) is False and check_decode_floor_ms(stub) is False
    assert capsys.readouterr().out.count("not attempted yet") == 2
