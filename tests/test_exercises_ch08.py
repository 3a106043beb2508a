"""Chapter 08's checkers accept the reference answers and reject the typical mistakes with a hint."""

import pytest

from minids.exercises import check_bubble_fraction, check_v_stage_rank


def bubble(p, m, v=1):
    return (p - 1) / (v * m + p - 1)


def v_rank(stage, p):
    return stage if stage < p else 2 * p - 1 - stage


def test_reference_answers_pass(capsys):
    assert check_bubble_fraction(bubble) is True
    assert check_v_stage_rank(v_rank) is True
    assert capsys.readouterr().out.count("correct") == 2


@pytest.mark.parametrize("wrong, hint", [
    (lambda p, m, v=1: (p - 1) / (v * m + p), "bubble_fraction.p=2, m=1, v=1. is 0.3333"),  # off by one
    (lambda p, m, v=1: (p - 1) / (m + p - 1), "p=4, m=8, v=2"),  # forgot the chunks
    (lambda p, m, v=1: (p - 1) / (v * m), "p=2, m=1, v=1. is 1.0000"),  # bubble / ideal time, not / step time
    (lambda p, m, v=1: (p - 1) / (v * (m + p - 1)), "p=4, m=8, v=2"),  # divided the whole fraction by v
])
def test_bubble_mistakes_fail_with_a_hint(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check_bubble_fraction(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda s, p: s if s < p else 2 * p - s, "stage=1, p=1. is 1, expected rank 0"),  # off by one
    (lambda s, p: s % p, "stage=2, p=2. is 0, expected rank 1"),  # round robin, not a V
    (lambda s, p: s // 2, "stage=1, p=2. is 0, expected rank 1"),  # neighbours paired
])
def test_v_rank_mistakes_fail_with_a_hint(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check_v_stage_rank(wrong)


def test_stubs_are_not_attempted(capsys):
    def stub(*args):
        raise NotImplementedError

    assert check_bubble_fraction(stub) is False
    assert check_v_stage_rank(stub) is False
    assert capsys.readouterr().out.count("not attempted yet") == 2
