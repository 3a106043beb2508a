"""The checkers' contract: True and one line when right, AssertionError with a hint when wrong,
False and "not attempted yet" for the untouched stub."""

import pytest
import torch

import minids.exercises as ex
from minids.exercises import checker, expect_close, expect_equal


@checker("double")
def check_double(fn):
    x = torch.arange(6.0).reshape(2, 3)
    expect_close(fn(x), 2 * x, "double(x)")


def test_right_answer_prints_one_line(capsys):
    assert check_double(lambda x: x + x) is True
    assert capsys.readouterr().out == "double: correct\n"


def test_stub_is_not_attempted(capsys):
    def stub(x):
        raise NotImplementedError

    assert check_double(stub) is False
    assert "double: not attempted yet" in capsys.readouterr().out


def test_wrong_value_names_the_position():
    with pytest.raises(AssertionError, match=r"differs at index \(0, 1\): got 1, expected 2"):
        check_double(lambda x: x * x)


def test_wrong_shape_and_dtype_are_named():
    with pytest.raises(AssertionError, match=r"shape \(3, 2\), expected \(2, 3\)"):
        check_double(lambda x: (2 * x).T)
    with pytest.raises(AssertionError, match="dtype torch.float64"):
        check_double(lambda x: (2 * x).double())
    with pytest.raises(AssertionError, match="is 3, expected 4"):
        expect_equal(3, 4, "count")


def test_every_chapter_checker_is_exported():
    names = [n for n in ex.__all__ if n.startswith("check_")]
    assert all(callable(getattr(ex, n)) for n in names)
