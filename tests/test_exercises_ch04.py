"""Chapter 04's checkers accept SwiGLU and the width rule and reject the usual mistakes."""

import math

import pytest
import torch
import torch.nn.functional as F

from minids import SwiGLU, swiglu_hidden_size
from minids.exercises import check_ffn_hidden_size, check_swiglu
from minids.exercises.ch04 import swiglu


def test_references_pass(capsys):
    assert check_swiglu(swiglu) is True
    assert check_ffn_hidden_size(swiglu_hidden_size) is True
    assert capsys.readouterr().out == "swiglu: correct\nffn_hidden_size: correct\n"


def test_the_module_passes():
    def with_module(x, w_gate, w_up, w_down):
        ffn = SwiGLU(w_gate.shape[1], w_gate.shape[0])
        ffn.load_state_dict({"gate_proj.weight": w_gate, "up_proj.weight": w_up, "down_proj.weight": w_down})
        with torch.no_grad():
            return ffn(x)

    assert check_swiglu(with_module) is True


def test_stubs_are_not_attempted(capsys):
    def stub(*args):
        raise NotImplementedError

    assert check_swiglu(stub) is False and check_ffn_hidden_size(stub) is False
    assert capsys.readouterr().out.count("not attempted yet") == 2


def test_swapped_gate_and_up_is_caught():
    with pytest.raises(AssertionError, match="SiLU is on the up projection"):
        check_swiglu(lambda x, g, u, d: (F.silu(x @ u.T) * (x @ g.T)) @ d.T)


def test_missing_or_wrong_activation_is_caught():
    with pytest.raises(AssertionError, match="no SiLU"):
        check_swiglu(lambda x, g, u, d: ((x @ g.T) * (x @ u.T)) @ d.T)
    with pytest.raises(AssertionError, match="uses ReLU"):
        check_swiglu(lambda x, g, u, d: (F.relu(x @ g.T) * (x @ u.T)) @ d.T)


def test_missing_transpose_is_caught():
    # x @ w_down instead of x @ w_down.T: (.., 16) @ (6, 16) fails in torch; with w_down.T.T the shapes mismatch
    with pytest.raises((AssertionError, RuntimeError)):
        check_swiglu(lambda x, g, u, d: (F.silu(x @ g.T) * (x @ u.T)) @ d)


def test_rounding_mistakes_are_caught():
    def nearest(d_model, multiple_of=256):
        return multiple_of * round(8 * d_model / 3 / multiple_of)

    def down(d_model, multiple_of=256):
        return multiple_of * math.floor(8 * d_model / 3 / multiple_of)

    def always_up(d_model, multiple_of=256):
        return multiple_of * (int(8 * d_model / 3) // multiple_of + 1)

    def fixed_256(d_model, multiple_of=256):
        return 256 * math.ceil(8 * d_model / 3 / 256)

    with pytest.raises(AssertionError, match=r"ffn_hidden_size\(8192, 256\).*is 21760, expected 22016"):
        check_ffn_hidden_size(nearest)
    with pytest.raises(AssertionError, match=r"ffn_hidden_size\(4096, 256\).*is 10752, expected 11008"):
        check_ffn_hidden_size(down)
    with pytest.raises(AssertionError, match=r"ffn_hidden_size\(768, 256\).*is 2304, expected 2048"):
        check_ffn_hidden_size(always_up)
    with pytest.raises(AssertionError, match=r"ffn_hidden_size\(1000, 64\)"):
        check_ffn_hidden_size(fixed_256)
