"""Chapter 03's checker accepts the reference repeat_kv and rejects the typical mistakes."""

import pytest
import torch
from einops import repeat

from minids.exercises import check_repeat_kv


def reference(kv, n_rep):
    return repeat(kv, "b k s d -> b (k r) s d", r=n_rep)


def test_accepts_reference_and_repeat_interleave(capsys):
    assert check_repeat_kv(reference) is True
    assert check_repeat_kv(lambda kv, r: kv.repeat_interleave(r, dim=1)) is True
    assert capsys.readouterr().out.splitlines() == ["repeat_kv: correct"] * 2


@pytest.mark.parametrize("wrong, hint", [
    (lambda kv, r: kv.repeat(1, r, 1, 1), "tiled order"),                    # repeat vs repeat_interleave
    (lambda kv, r: torch.cat([kv] * r, dim=1), "tiled order"),
    (lambda kv, r: kv.repeat_interleave(r, dim=2), "shape"),                  # the wrong axis (positions)
    (lambda kv, r: repeat(kv, "b k s d -> b (r k) s d", r=r), "tiled order"),  # r outer
    (lambda kv, r: kv, "shape"),                                              # forgot to repeat
])
def test_rejects_typical_mistakes(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check_repeat_kv(wrong)


def test_stub_is_not_attempted(capsys):
    def stub(kv, n_rep):
        raise NotImplementedError

    assert check_repeat_kv(stub) is False
    assert "not attempted yet" in capsys.readouterr().out
