"""The pipeline schedules of minids.pipeline.schedule_sim against the published bubbles and torch's own orders.

Published idle time per rank, equal stages, F forward, B full backward, W its weight part (per stage):
GPipe and 1F1B (p - 1)(F + B), i.e. the fraction (p - 1)/(m + p - 1); interleaved with v chunks per rank the
same divided by v; ZB1P (p - 1)(F + B - 2W); DualPipe(V) (PP/2 - 1)(F&B + B - 3W) with PP = 2p stages
(docs/references.md#pipelines, #pipeline-schedules). The papers draw them with F = B_input = W, i.e. a full
backward of twice the forward, half of it for the weights: the simulator's defaults.
"""

import logging

import pytest
import torch

from minids import ModelConfig
from minids.pipeline import partition, stage_costs
from minids.pipeline.schedule_sim import (
    bubble_fraction, published_bubble, rank_orders, rank_stages, simulate, stage_rank,
)

CASES = [("gpipe", 1), ("1f1b", 1), ("interleaved", 2), ("interleaved", 3), ("zb1p", 1), ("dualpipev", 2)]


@pytest.mark.parametrize("schedule, v", CASES)
def test_every_rank_idles_exactly_the_published_bubble(schedule, v):
    for p in (2, 3, 4, 8):
        for m in (2 * p, 4 * p):
            t = simulate([1.0] * (p * v), m, schedule, chunks=v)  # F = 1, B = 2, W = 1 per stage
            expected = published_bubble(schedule, p, f=1.0, b=2.0, w=1.0)
            assert [t.idle(r) for r in range(p)] == pytest.approx([expected] * p, abs=1e-9), (p, m)
            if schedule in ("gpipe", "1f1b", "interleaved"):
                assert t.bubble_fraction == pytest.approx(bubble_fraction(p, m, v), abs=1e-12)


def test_the_bubbles_rank_as_published():
    """p = 4, m = 16, F = 1, B = 2, W = 1 per stage of the same model on 4 ranks: interleaving halves
    1F1B's idle time, ZB1P cuts it to a third, DualPipeV (chunks of half a stage) to a third of its own F&B."""
    p, m = 4, 16
    idle = {s: simulate([1.0] * p * v, m, s, chunks=v).idle(0) * (1 if v == 1 else 1 / v)
            for s, v in [("1f1b", 1), ("interleaved", 2), ("zb1p", 1), ("dualpipev", 2)]}
    # in one-stage units: 9, 4.5, 3, 3
    assert idle == pytest.approx({"1f1b": 9.0, "interleaved": 4.5, "zb1p": 3.0, "dualpipev": 3.0})


def test_zb1p_formula_holds_beyond_equal_times_while_w_fits_the_gaps():
    for b, w in [(2.0, 0.8), (1.6, 0.8), (2.0, 0.6)]:  # W <= F and W <= B - W
        t = simulate([1.0] * 4, 12, "zb1p", backward_ratio=b, weight_share=w / b)
        assert t.idle(0) == pytest.approx(published_bubble("zb1p", 4, 1.0, b, w))


def test_peak_activations_per_rank():
    p, m = 4, 12
    assert [simulate([1.0] * p, m, "gpipe").peak_in_flight(r) for r in range(p)] == [m] * p
    assert [simulate([1.0] * p, m, "1f1b").peak_in_flight(r) for r in range(p)] == [p - r for r in range(p)]
    assert max(simulate([1.0] * p, m, "zb1p").peak_in_flight(r) for r in range(p)) == p  # same as 1F1B
    # DualPipe's table: PP + 1 chunk activations per device, PP = 2p stages
    dual = simulate([1.0] * 2 * p, m, "dualpipev")
    assert [dual.peak_in_flight(r) for r in range(p)] == [2 * p + 1] * p
    sizes = [0.5] * 2 * p  # a chunk holds half a 1F1B stage's layers: p + 1/2 stages' worth
    assert dual.peak_activations(0, sizes) == pytest.approx(p + 0.5)


@pytest.mark.parametrize("schedule, v", CASES + [("zbv", 2), ("zb1p", 2)])
def test_orders_run_every_piece_once_and_respect_dependencies(schedule, v):
    p, m = 3, 6
    t = simulate([1.0 + 0.3 * (s % 3) - 0.2 * (s % 2) for s in range(p * v)], m, schedule, chunks=v, comm_time=0.1)
    forward, backward, weight = {}, {}, {}
    for op in t.ops:
        if op.kind in ("F", "FB"):
            assert (op.stage, op.microbatch) not in forward
            forward[(op.stage, op.microbatch)] = op
        if op.kind in ("B", "I", "FB"):
            key = op.backward if op.kind == "FB" else (op.stage, op.microbatch)
            assert key not in backward
            backward[key] = op
        if op.kind in ("B", "W", "FB"):
            key = op.backward if op.kind == "FB" else (op.stage, op.microbatch)
            weight[key] = op
        assert op.rank == stage_rank(schedule, op.stage, p)
    everything = {(s, i) for s in range(p * v) for i in range(m)}
    assert set(forward) == set(backward) == set(weight) == everything
    for (s, i), op in forward.items():
        if s > 0:
            assert op.start >= forward[(s - 1, i)].end
    for (s, i), op in backward.items():
        before = backward[(s + 1, i)] if s < p * v - 1 else forward[(s, i)]
        assert op.start >= before.end
    for r in range(p):  # a rank runs one thing at a time
        mine = sorted((o for o in t.ops if o.rank == r), key=lambda o: o.start)
        assert all(a.end <= b.start + 1e-12 for a, b in zip(mine, mine[1:]))


class FakeStage:
    """Just what torch's multi-stage schedules read to plan their order (no process group needed)."""

    def __init__(self, index, n_stages, rank, n_ranks):
        self.stage_index, self.num_stages, self.group_rank, self.group_size = index, n_stages, rank, n_ranks
        self.is_first, self.is_last = index == 0, index == n_stages - 1
        self.submod, self.stage_index_to_group_rank, self.has_backward = torch.nn.Linear(1, 1), {}, True


def as_torch_text(op):
    if op[0] == "FB":
        (fs, fi), (bs, bi) = op[1], op[2]
        return f"({fs}F{fi};{bs}B{bi})OVERLAP_F_B"
    return f"{op[1]}{op[0]}{op[2]}"


@pytest.mark.parametrize("schedule, cls_name, v", [
    ("interleaved", "ScheduleInterleaved1F1B", 2), ("interleaved", "ScheduleInterleaved1F1B", 3),
    ("zb1p", "ScheduleInterleavedZeroBubble", 1), ("zb1p", "ScheduleInterleavedZeroBubble", 2),
    ("zbv", "ScheduleZBVZeroBubble", 2), ("dualpipev", "ScheduleDualPipeV", 2),
])
def test_orders_equal_torchs(schedule, cls_name, v):
    """The simulator runs the very order torch.distributed.pipelining runs, rank by rank."""
    import torch.distributed.pipelining.schedules as schedules

    cls = getattr(schedules, cls_name, None)
    if cls is None:
        pytest.skip(f"this torch has no {cls_name}")
    logging.disable(logging.WARNING)
    try:
        for p in (2, 3, 4):
            for m in (2 * p, 3 * p, 4 * p):
                stages = [FakeStage(s, p * v, 0, p) for s in rank_stages(schedule, 0, p, v)]
                theirs = cls(stages, m, loss_fn=lambda out, target: out).pipeline_order
                ours = rank_orders(schedule, p, m, v)
                for r in range(p):
                    assert [as_torch_text(o) for o in ours[r]] == [str(a) for a in theirs[r] if a is not None]
    finally:
        logging.disable(logging.NOTSET)


def test_v_placement_and_its_parameters():
    p = 4
    assert [[s for s in range(2 * p) if stage_rank("dualpipev", s, p) == r] for r in range(p)] == \
        [[r, 2 * p - 1 - r] for r in range(p)]
    cfg = ModelConfig.preset("deepseek-llm-67b")  # 95 layers + head = 96 units: 8 stages of 12
    ranges = partition(cfg, 2 * p)
    assert [len(r) for r in ranges] == [12] * 7 + [11]
    per_stage = stage_costs(cfg, ranges, by="params")
    per_rank_v = [sum(per_stage[s] for s in rank_stages("dualpipev", r, p, 2)) for r in range(p)]
    per_rank_1f1b = stage_costs(cfg, partition(cfg, p), by="params")
    # DualPipe's "2x parameters per device" counts against one stage of the same 2p-stage cut ...
    assert min(per_rank_v) > 1.9 * max(per_stage[1:-1])
    # ... on the same p devices a V rank holds what a 1F1B rank holds (within the embedding/head shuffle)
    assert max(per_rank_v) / max(per_rank_1f1b) == pytest.approx(1.0, abs=0.03)


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="not one of"):
        rank_orders("2f2b", 2, 4)
    with pytest.raises(ValueError, match="dualpipev needs at least as many microbatches as stages: m = 3 < 4"):
        rank_orders("dualpipev", 2, 3)
    with pytest.raises(ValueError, match="exactly 2 chunks per rank"):
        rank_orders("zbv", 2, 4, chunks=3)
    with pytest.raises(ValueError, match="m = 7 must be a multiple of 3 rounds"):
        rank_orders("interleaved", 2, 7, chunks=2)
    with pytest.raises(ValueError, match="one stage per rank"):
        rank_orders("1f1b", 2, 4, chunks=2)


def test_gantt_chart_labels_every_kind_of_work():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minids.pipeline import plot_timeline

    t = simulate([1.0] * 4, 8, "dualpipev")
    ax = plot_timeline(t, time_unit="forward times of one chunk")
    labels = [x.get_text() for x in ax.get_legend().get_texts()]
    assert labels == ["forward F", "full backward B", "input-gradient B", "weight-gradient W", "overlapped F&B",
                      "a later stage (chunk)"]
    assert ax.get_xlabel() == "time (forward times of one chunk)"
    assert [x.get_text() for x in ax.get_yticklabels()] == ["rank 1", "rank 0"]
    assert len(ax.collections) == len(t.ops)  # one box per operation
    assert "bubble" in ax.get_title()
    one = plot_timeline(simulate([1.0] * 3, 4, "1f1b"))
    assert [x.get_text() for x in one.get_legend().get_texts()] == ["forward F", "full backward B"]
    plt.close("all")


def test_forward_only_runs_at_the_pace_of_the_slowest_stage():
    """Inference: the first microbatch crosses every stage, each later one adds the slowest stage's time."""
    f = [1.0, 2.5, 1.5]
    t = simulate(f, 5, forward_only=True)
    assert t.makespan == pytest.approx(sum(f) + 4 * max(f))
    assert {op.kind for op in t.ops} == {"F"} and len(t.ops) == 15
    with pytest.raises(ValueError, match="one stage per rank"):
        simulate([1.0] * 4, 4, "dualpipev", forward_only=True)


def test_rank_costs_add_each_ranks_stages():
    from minids.pipeline import rank_costs

    cfg = ModelConfig.preset("deepseek-llm-67b")
    ranges = partition(cfg, 8)
    per_stage = stage_costs(cfg, ranges)
    v = rank_costs(cfg, ranges, "dualpipev", 4)
    assert v == [per_stage[r] + per_stage[7 - r] for r in range(4)]  # the V: r and 2p - 1 - r
    loop = rank_costs(cfg, ranges, "interleaved", 4)
    assert loop == [per_stage[r] + per_stage[r + 4] for r in range(4)]  # round robin
    assert sum(v) == sum(loop) == sum(per_stage)
    with pytest.raises(ValueError, match="8 stages cannot be shared evenly by 3 ranks"):
        rank_costs(cfg, ranges, "interleaved", 3)
