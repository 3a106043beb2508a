"""Chapter 01's checker accepts RMSNorm and rejects the usual mistakes."""

import pytest
import torch

from minids import RMSNorm
from minids.exercises import check_rms_norm
from minids.exercises.ch01 import rms_norm


def test_reference_and_the_module_pass(capsys):
    assert check_rms_norm(rms_norm) is True
    assert capsys.readouterr().out == "rms_norm: correct\n"

    def with_module(x, weight, eps):  # minids' own RMSNorm computes the same function
        norm = RMSNorm(x.shape[-1], eps=eps, dtype=weight.dtype)
        with torch.no_grad():
            norm.weight.copy_(weight)
            return norm(x)

    assert check_rms_norm(with_module) is True


def test_stub_is_not_attempted(capsys):
    def stub(x, weight, eps):
        raise NotImplementedError

    assert check_rms_norm(stub) is False
    assert "not attempted yet" in capsys.readouterr().out


def test_forgetting_the_float32_reduction_is_caught():
    def in_input_dtype(x, weight, eps):
        return weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)

    with pytest.raises(AssertionError, match="overflows float16"):
        check_rms_norm(in_input_dtype)


def test_wrong_axis_is_caught():
    def over_tokens(x, weight, eps):
        x32 = x.float()
        return weight * (x32 * torch.rsqrt(x32.pow(2).mean(0, keepdim=True) + eps)).to(x.dtype)

    with pytest.raises(AssertionError, match="over the last axis"):
        check_rms_norm(over_tokens)


def test_sum_instead_of_mean_is_caught():
    def with_sum(x, weight, eps):
        x32 = x.float()
        return weight * (x32 * torch.rsqrt(x32.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype)

    with pytest.raises(AssertionError, match="RMS over the last axis"):
        check_rms_norm(with_sum)


def test_eps_outside_the_sqrt_or_ignored_is_caught():
    def eps_outside(x, weight, eps):
        x32 = x.float()
        return weight * (x32 / (x32.pow(2).mean(-1, keepdim=True).sqrt() + eps)).to(x.dtype)

    def eps_ignored(x, weight, eps):
        return rms_norm(x, weight, 1e-6)

    for wrong in (eps_outside, eps_ignored):
        with pytest.raises(AssertionError, match="eps=0.5"):
            check_rms_norm(wrong)


def test_no_eps_gives_nan_and_is_caught():
    def no_eps(x, weight, eps):
        x32 = x.float()
        return weight * (x32 / x32.pow(2).mean(-1, keepdim=True).sqrt()).to(x.dtype)

    with pytest.raises(AssertionError):
        check_rms_norm(no_eps)


def test_not_casting_back_is_caught():
    def stays_float32(x, weight, eps):
        x32 = x.float()
        return weight.float() * x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)

    with pytest.raises(AssertionError, match="torch.float32"):
        check_rms_norm(stays_float32)
