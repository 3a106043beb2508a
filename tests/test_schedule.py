"""The learning-rate schedules against the paper's description (arXiv 2401.02954, section 2.3)."""

import math

import pytest

from minids.schedule import cosine_lr, lr_at, multistep_lr


def test_multistep_matches_the_paper_boundaries():
    # 2000 warm-up steps as in the paper; drops after 80% and 90% of training.
    total, peak, warm = 10_000, 4.2e-4, 2000
    assert multistep_lr(1999, total, peak, warm) == pytest.approx(peak)
    assert multistep_lr(7999, total, peak, warm) == pytest.approx(peak)
    assert multistep_lr(8000, total, peak, warm) == pytest.approx(0.316 * peak)
    assert multistep_lr(8999, total, peak, warm) == pytest.approx(0.316 * peak)
    assert multistep_lr(9000, total, peak, warm) == pytest.approx(0.1 * peak)
    assert multistep_lr(9999, total, peak, warm) == pytest.approx(0.1 * peak)


@pytest.mark.parametrize("total", [7, 10, 33, 101, 1000])
def test_multistep_phase_lengths(total):
    lrs = [multistep_lr(s, total, 1.0, 0) for s in range(total)]
    # The first drop happens at the first step >= 0.8 * total, the second at the first step >= 0.9 * total.
    assert lrs.count(1.0) == math.ceil(0.8 * total - 1e-9)
    assert lrs.count(0.1) == total - math.ceil(0.9 * total - 1e-9)
    assert lrs == sorted(lrs, reverse=True)


def test_the_middle_step_is_one_over_root_ten():
    # 31.6% is 10**-0.5 rounded: two equal drops on a log scale, from 1 to 0.1.
    assert multistep_lr(85, 100, 1.0, 0) == pytest.approx(10 ** -0.5, rel=1e-3)


def test_warmup_is_linear_and_never_zero():
    lrs = [multistep_lr(s, 100, 1.0, 10) for s in range(10)]
    assert lrs == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert min(lrs) > 0


def test_cosine_runs_from_peak_to_floor():
    total, warm = 200, 20
    lrs = [cosine_lr(s, total, 2.0, warm, min_ratio=0.1) for s in range(total)]
    assert lrs[warm] == pytest.approx(2.0)
    assert lrs[-1] == pytest.approx(0.2)
    after = lrs[warm:]
    assert all(a >= b for a, b in zip(after, after[1:]))
    mid = warm + (total - warm - 1) / 2  # half way down the cosine: the average of peak and floor
    assert cosine_lr(int(mid), total, 2.0, warm) == pytest.approx(1.1, abs=0.02)


def test_lr_at_dispatches_and_rejects_unknown_names():
    assert lr_at("multistep", 5, 10, 1.0, 0) == multistep_lr(5, 10, 1.0, 0)
    assert lr_at("cosine", 5, 10, 1.0, 0) == cosine_lr(5, 10, 1.0, 0)
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        lr_at("linear", 0, 10, 1.0, 0)


@pytest.mark.parametrize(
    "args, message",
    [
        ((10, 10, 1.0, 0), r"step must lie in \[0, total_steps\)"),
        ((-1, 10, 1.0, 0), r"step must lie"),
        ((0, 0, 1.0, 0), "total_steps must be positive"),
        ((0, 10, 1.0, 11), "warmup_steps must lie"),
        ((0, 10, 0.0, 0), "peak_lr must be positive"),
        ((0.5, 10, 1.0, 0), "step must be an int"),
    ],
)
def test_bad_arguments_are_named(args, message):
    with pytest.raises((ValueError, TypeError), match=message):
        multistep_lr(*args)
