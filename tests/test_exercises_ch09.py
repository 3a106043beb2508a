"""Chapter 09's checker accepts Eq. 1 and rejects the typical mistakes."""

import pytest

from minids.exercises import check_eq1


def reference(C):
    return 0.2920 * C**0.3271, 0.3118 * C**-0.1250


def test_accepts_reference(capsys):
    assert check_eq1(reference) is True
    assert capsys.readouterr().out.strip() == "eq1: correct"


@pytest.mark.parametrize("wrong, hint", [
    (lambda C: (0.2920 * C**0.3271, 0.3118 * C**0.1250), "falls as compute grows"),   # sign of the exponent
    (lambda C: (0.2920 * C**0.3271 / 4096, 0.3118 * C**-0.1250), "sequences"),         # sequences, not tokens
    (lambda C: reference(C)[::-1], "in that order"),                                 # swapped
    (lambda C: (0.3118 * C**0.3271, 0.2920 * C**-0.1250), "B_opt is"),                # swapped coefficients
    (lambda C: 0.2920 * C**0.3271, "pair"),                                           # only the batch
])
def test_rejects_typical_mistakes(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check_eq1(wrong)


def test_stub_is_not_attempted(capsys):
    def stub(C):
        raise NotImplementedError

    assert check_eq1(stub) is False
    assert "not attempted yet" in capsys.readouterr().out
