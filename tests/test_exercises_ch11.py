"""Chapter 11's checkers accept the reference answers and reject the typical mistakes with a hint."""

import pytest
import torch

from minids.exercises import check_balance_loss, check_topk_gates
from minids.moe import tokens_per_expert


def topk_gates(logits, k):
    s = logits.float().softmax(dim=-1)
    experts = s.topk(k, dim=-1).indices
    return experts, s.gather(-1, experts)


def renormalised(logits, k):
    experts, g = topk_gates(logits, k)
    return experts, g / g.sum(-1, keepdim=True)


def softmax_wrong_axis(logits, k):
    s = logits.float().softmax(dim=0)  # over the tokens
    experts = s.topk(k, dim=-1).indices
    return experts, s.gather(-1, experts)


def gates_from_logits(logits, k):
    experts = logits.float().topk(k, dim=-1).indices
    return experts, logits.float().gather(-1, experts)


def balance(experts, scores):
    T, E = scores.shape
    k = experts.shape[1]
    f = E / (k * T) * tokens_per_expert(experts, E)
    return (f * scores.mean(dim=0)).sum()


def balance_no_scale(experts, scores):
    T, E = scores.shape
    return (tokens_per_expert(experts, E) / (experts.shape[1] * T) * scores.mean(0)).sum()


def balance_forgot_scale(experts, scores):
    T, E = scores.shape
    return (tokens_per_expert(experts, E) / T * scores.mean(0)).sum()  # f_i without N'/K'


def balance_wrong_n(experts, scores):
    T, E = scores.shape
    k = experts.shape[1]
    return ((E + 2) / (k * T) * tokens_per_expert(experts, E) * scores.mean(0)).sum()  # N' counted with shared


def balance_detached(experts, scores):
    return balance(experts, scores.detach())


def stub(*args):
    raise NotImplementedError


def test_reference_answers_pass(capsys):
    assert check_topk_gates(topk_gates) is True
    assert check_balance_loss(balance) is True
    assert capsys.readouterr().out.count("correct") == 2


@pytest.mark.parametrize("wrong, hint", [(renormalised, "renormalised"), (softmax_wrong_axis, "chose experts"),
                                         (gates_from_logits, "gates")])
def test_topk_gates_rejects(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check_topk_gates(wrong)


def test_topk_gates_rejects_bf16_scores():
    with pytest.raises(AssertionError, match="float32"):
        check_topk_gates(lambda logits, k: tuple(x if x.dtype == torch.long else x.to(logits.dtype)
                                                 for x in topk_gates(logits, k)))


@pytest.mark.parametrize("wrong, hint", [(balance_no_scale, "scale of f_i"), (balance_forgot_scale, "N'/K'"), (balance_wrong_n, "differs"),
                                         (balance_detached, "gradient")])
def test_balance_loss_rejects(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check_balance_loss(wrong)


def test_stubs_are_not_attempted(capsys):
    assert check_topk_gates(stub) is False and check_balance_loss(stub) is False
    assert capsys.readouterr().out.count("not attempted yet") == 2
