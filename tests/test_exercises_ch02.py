"""Chapter 02's checker accepts rotate_half and rejects the interleaved layout, a wrong sign and a wrong axis."""

import pytest
import torch

from minids.exercises import check_rotate_half
from minids.rope import rotate_half


def test_reference_passes(capsys):
    assert check_rotate_half(rotate_half) is True
    assert capsys.readouterr().out == "rotate_half: correct\n"


def test_einops_answer_passes():
    from einops import rearrange

    def with_einops(x):
        halves = rearrange(x, "... (two d) -> two ... d", two=2)
        return torch.cat([-halves[1], halves[0]], dim=-1)

    assert check_rotate_half(with_einops) is True


def test_stub_is_not_attempted(capsys):
    def stub(x):
        raise NotImplementedError

    assert check_rotate_half(stub) is False
    assert "not attempted yet" in capsys.readouterr().out


def test_interleaved_layout_is_caught():
    def interleaved(x):
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack([-odd, even], dim=-1).flatten(-2)

    with pytest.raises(AssertionError, match="interleaved layout"):
        check_rotate_half(interleaved)


def test_wrong_sign_is_caught():
    def wrong_sign(x):
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x2, -x1], dim=-1)

    with pytest.raises(AssertionError, match="sign is on the wrong half"):
        check_rotate_half(wrong_sign)


def test_no_sign_is_caught():
    def no_sign(x):
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x2, x1], dim=-1)

    with pytest.raises(AssertionError, match="halves are swapped"):
        check_rotate_half(no_sign)


def test_wrong_axis_is_caught():
    def first_axis(x):
        x1, x2 = x.chunk(2, dim=0) if x.shape[0] % 2 == 0 else x.chunk(2, dim=-1)
        return torch.cat([-x2, x1], dim=0 if x.shape[0] % 2 == 0 else -1)

    with pytest.raises(AssertionError, match=r"\(2, 3, 5, 16\)"):
        check_rotate_half(first_axis)


def test_in_place_change_is_caught():
    def in_place(x):
        out = rotate_half(x)
        x.copy_(out)
        return x

    with pytest.raises(AssertionError, match="in place"):
        check_rotate_half(in_place)
