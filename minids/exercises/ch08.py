"""Chapter 08's exercises: the idle share of a pipeline (the bubble), and where a V places its stages.

Both checkers compare with the simulator of minids.pipeline, not with a second copy of the formula: a learner's
function is right when it agrees with what the schedule does.
"""

from __future__ import annotations

from ..pipeline.schedule_sim import simulate, stage_rank
from ._contract import checker

# (p ranks, m microbatches, v chunks per rank): v = 1 is 1F1B, v > 1 interleaved 1F1B
BUBBLE_CASES = [(1, 4, 1), (2, 1, 1), (2, 8, 1), (4, 8, 1), (8, 32, 1), (4, 8, 2), (2, 4, 3), (3, 6, 2)]


@checker("bubble_fraction", "correct: it matches the simulated idle share of 1F1B and interleaved 1F1B")
def check_bubble_fraction(fn):
    """fn(p, m, v) -> the idle fraction of a step with p equal stages, m microbatches, v chunks per rank."""
    for p, m, v in BUBBLE_CASES:
        schedule = "1f1b" if v == 1 else "interleaved"
        want = simulate([1.0] * (p * v), m, schedule, chunks=v).bubble_fraction
        got = fn(p, m, v)
        assert isinstance(got, (int, float)), f"bubble_fraction({p}, {m}, {v}) returned {type(got).__name__}, " \
                                              "expected a number"
        assert abs(got - want) < 1e-9, (
            f"bubble_fraction(p={p}, m={m}, v={v}) is {got:.4f}, but the simulated {schedule} idles {want:.4f} "
            f"of the time (= {p - 1}/{v * m + p - 1})")


@checker("v_stage_rank", "correct: every stage lands where DualPipeV puts it")
def check_v_stage_rank(fn):
    """fn(stage, p) -> the rank holding `stage` of 2p stages placed as a V."""
    for p in range(1, 7):
        for s in range(2 * p):
            want, got = stage_rank("dualpipev", s, p), fn(s, p)
            assert got == want, (f"v_stage_rank(stage={s}, p={p}) is {got!r}, expected rank {want} "
                                 f"(rank r holds stages r and 2p - 1 - r = {2 * p - 1 - want})")
