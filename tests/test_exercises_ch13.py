"""Chapter 13's checkers accept the merged weight and the LoRA count and reject the usual mistakes."""

import pytest

from minids import lora
from minids.exercises import check_lora_count, check_merged_weight
from minids.exercises.ch13 import merged_weight


def correct_count(config, r, targets):
    d, kv = config.d_model, config.n_kv_heads * config.head_dim
    shapes = {"q_proj": (d, d), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (d, d),
              "gate_proj": (d, config.d_ff), "up_proj": (d, config.d_ff), "down_proj": (config.d_ff, d)}
    return config.n_layers * sum(r * (a + b) for a, b in (shapes[t] for t in targets))


def test_references_pass(capsys):
    assert check_merged_weight(merged_weight) is True
    assert check_lora_count(lora.lora_param_count) is True
    assert check_lora_count(correct_count) is True
    assert capsys.readouterr().out == "merged_weight: correct\nlora_count: correct\nlora_count: correct\n"


def test_stubs_are_not_attempted(capsys):
    def stub(*args):
        raise NotImplementedError

    assert check_merged_weight(stub) is False and check_lora_count(stub) is False
    assert capsys.readouterr().out.count("not attempted yet") == 2


def test_merge_scale_mistakes_are_caught():
    with pytest.raises(AssertionError, match="no alpha / r scale"):
        check_merged_weight(lambda W0, A, B, alpha, r: W0 + B @ A)
    with pytest.raises(AssertionError, match="scaled by alpha, not alpha / r"):
        check_merged_weight(lambda W0, A, B, alpha, r: W0 + alpha * B @ A)
    with pytest.raises(AssertionError, match="r / alpha"):
        check_merged_weight(lambda W0, A, B, alpha, r: W0 + r / alpha * B @ A)


def test_merge_wrong_product_is_caught():
    with pytest.raises((AssertionError, RuntimeError)):
        check_merged_weight(lambda W0, A, B, alpha, r: W0 + alpha / r * (A.T @ B.T))  # (B A) transposed: (d_in, d_out)
    with pytest.raises(AssertionError, match="shape"):
        check_merged_weight(lambda W0, A, B, alpha, r: (alpha / r) * B @ A @ W0.T)  # not W0 + ...


def test_count_mistakes_are_caught():
    def no_gqa(config, r, targets):  # k_proj and v_proj as wide as q_proj: right for the 7B only
        return correct_count(config.replace(n_kv_heads=config.n_heads), r, targets)

    def one_layer(config, r, targets):
        return correct_count(config, r, targets) // config.n_layers

    def full_matrix(config, r, targets):  # counts r * d_in * d_out instead of r (d_in + d_out)
        d = config.d_model
        return config.n_layers * sum(r * d * d for _ in targets)

    with pytest.raises(AssertionError, match=r"lora_count\(deepseek-llm-67b, r=8.*is 118681600, expected 107786240"):
        check_lora_count(no_gqa)
    with pytest.raises(AssertionError, match=r"lora_count\(deepseek-llm-7b, r=8"):
        check_lora_count(one_layer)
    with pytest.raises(AssertionError, match="expected 18739200"):
        check_lora_count(full_matrix)
