import torch

from minids.compare import below, rel_err


def test_rel_err_is_the_frobenius_error_relative_to_the_reference():
    b = torch.tensor([3.0, 4.0])  # norm 5
    assert rel_err(b, b) == 0.0
    assert abs(rel_err(b + torch.tensor([0.0, 0.5]), b) - 0.1) < 1e-12
    assert rel_err(b.half(), b) == 0.0  # exact in float16 too: compared in float64


def test_below_prints_the_power_of_ten_above_the_error():
    assert below(3e-7) == "< 1e-6"
    assert below(1.2e-16) == "< 1e-15"
    assert below(0.0) == "0"
