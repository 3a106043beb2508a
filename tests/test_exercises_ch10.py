"""Chapter 10's checkers accept the reference solutions and reject typical mistakes."""

import pytest

from minids import ModelConfig, matmul_flops_per_token
from minids.exercises import check_attainable_flops, check_attention_flops


def attention_flops(cfg, t):
    return cfg.n_layers * 4 * cfg.n_heads * cfg.head_dim * (t + 1) / 2


def test_reference_agrees_with_the_package_formula():
    cfg = ModelConfig.preset("deepseek-llm-7b")
    # the weights' FLOPs do not depend on t, so the difference between two lengths is attention's alone
    assert matmul_flops_per_token(cfg, 2048) - matmul_flops_per_token(cfg, 1) == pytest.approx(
        attention_flops(cfg, 2048) - attention_flops(cfg, 1))


def test_attention_flops_accepts_the_reference_and_rejects_mistakes():
    assert check_attention_flops(attention_flops) is True
    with pytest.raises(AssertionError, match="sees i \\+ 1"):
        check_attention_flops(lambda cfg, t: cfg.n_layers * 4 * cfg.n_heads * cfg.head_dim * t)
    with pytest.raises(AssertionError, match="QUERY head"):
        check_attention_flops(lambda cfg, t: cfg.n_layers * 4 * cfg.n_kv_heads * cfg.head_dim * (t + 1) / 2)
    with pytest.raises(AssertionError, match="expected"):
        check_attention_flops(lambda cfg, t: cfg.n_layers * 4 * cfg.n_heads * cfg.head_dim * t / 2)


def test_attainable_accepts_the_reference_and_rejects_mistakes():
    assert check_attainable_flops(lambda i, p, b: min(p, i * b)) is True
    for wrong in (lambda i, p, b: max(p, i * b), lambda i, p, b: min(p, i), lambda i, p, b: i * b):
        with pytest.raises(AssertionError):
            check_attainable_flops(wrong)


def test_stubs_are_not_attempted(capsys):
    def stub(*args):
        raise NotImplementedError

    assert check_attention_flops(stub) is False and check_attainable_flops(stub) is False
    assert capsys.readouterr().out.count("not attempted yet") == 2
