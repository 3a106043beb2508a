import json

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from minids.paths import project_path  # noqa: E402
from minids.plots.decode import AFTER, BEFORE, decode_floor_figure, floor_fractions  # noqa: E402


def h100_records():
    """One run on one H100: the split-KV kernel and the earlier sdpa path, side by side."""
    with open(project_path("benchmarks", "results", "batched_decode_gpu_h100.json")) as f:
        return json.load(f)


def test_floor_fractions_takes_the_best_kernel_of_the_family():
    measured = ((0.4, "sdpa"), (0.6, "einsum"), (0.5, "sdpa"), (0.8, "triton"))
    recs = [dict(metric="decode_frac_of_bandwidth_floor", impl="minids", model="m", kv_heads=8, context=2048, batch=1,
                 value=v, decode_attention=k) for v, k in measured]
    assert floor_fractions(recs, BEFORE) == {("m", 8, 2048): {1: (0.6, "einsum")}}  # sdpa: its later 0.5
    assert floor_fractions(recs, AFTER) == {("m", 8, 2048): {1: (0.8, "triton")}}
    assert floor_fractions(recs, None, "transformers") == {}
    rerun = recs + [dict(recs[3], value=0.7)]  # the same kernel measured again: the later run counts, not the max
    assert floor_fractions(rerun, AFTER) == {("m", 8, 2048): {1: (0.7, "triton")}}


def test_figure_has_a_panel_per_model_and_before_after_lines():
    records = h100_records()
    fig = decode_floor_figure(records)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["7B (MHA)", "7B (GQA, 8 KV heads)", "7B (GQA, 4 KV heads)"]
    assert all(ax.get_ylabel() == "% of the weights + KV floor" for ax in axes)
    assert all(ax.get_xlabel() == "batch B (sequences)" for ax in axes)
    assert "NVIDIA H100 80GB HBM3" in fig._suptitle.get_text()
    # GQA-8: before and after at 2K and 4K
    assert [line.get_label() for line in axes[1].get_lines()] == [
        "before (sdpa / einsum), T=2K", "after (split-KV), T=2K", "before (sdpa / einsum), T=4K",
        "after (split-KV), T=4K"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]  # one legend for the figure
    assert labels == ["before (sdpa / einsum), T=2K", "after (split-KV), T=2K", "transformers (best path), T=2K",
                      "before (sdpa / einsum), T=4K", "after (split-KV), T=4K", "goal 75% (B 1-4)",
                      "goal 80% (B >= 8)"]
    # the "after" line's points are the file's split-KV fractions, in percent
    after = next(line for line in axes[2].get_lines() if line.get_label() == "after (split-KV), T=2K")
    want = floor_fractions(records, AFTER)[("deepseek-llm-7b", 4, 2048)]
    assert list(after.get_xdata()) == [1, 2, 4, 8, 16, 32, 64, 128] == list(want)
    assert list(after.get_ydata()) == pytest.approx([100 * f for f, _ in want.values()])
    last = [r for r in records if r["metric"] == "decode_frac_of_bandwidth_floor" and r["kv_heads"] == 4
            and r["context"] == 2048 and r["batch"] == 1 and r.get("decode_attention") == "triton"][-1]
    assert want[1] == (last["value"], "triton+compiled")  # the file's later run of that point
    matplotlib.pyplot.close(fig)


def test_only_earlier_kernels_draw_only_before_and_no_records_is_an_error():
    with open(project_path("benchmarks", "results", "batched_decode_gpu.json")) as f:
        old = [r for r in json.load(f) if r.get("decode_attention") in BEFORE or r.get("impl") == "transformers"]
    fig = decode_floor_figure(old)
    assert len(fig.axes) == 4 and fig.axes[3].get_title() == "67B (GQA, 8 KV heads)"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert not any(label.startswith("after") for label in labels)
    matplotlib.pyplot.close(fig)
    with pytest.raises(ValueError, match="no minids"):
        decode_floor_figure([])


def test_goal_rows_hold_each_point_to_its_batch_goal():
    from minids.plots.decode import goal_of, goal_rows

    assert [goal_of(b) for b in (1, 4, 8, 128)] == [0.75, 0.75, 0.80, 0.80]
    recs = [dict(metric="decode_frac_of_bandwidth_floor", impl="minids", model="m", kv_heads=4, context=2048,
                 batch=b, value=v, decode_attention="triton", compile_layers=True)
            for b, v in ((1, 0.76), (4, 0.74), (8, 0.79), (16, 0.81))]
    recs.append(dict(recs[0], decode_attention="sdpa", compile_layers=False, value=0.9))  # "before": not a row
    rows = goal_rows(recs)
    assert [(r["batch"], r["goal"], r["met"]) for r in rows] == [
        (1, 0.75, True), (4, 0.75, False), (8, 0.80, False), (16, 0.80, True)]
    assert {r["kernel"] for r in rows} == {"triton+compiled"}
    h100 = goal_rows(h100_records())
    assert len(h100) == 2 * 2 * 8 + 7 + 6  # GQA-8 and -4: batches 1-128 at 2K and 4K; MHA's cache fits 80 GB to 64, 32
    assert all(r["met"] == (r["fraction"] >= r["goal"]) for r in h100)
    assert all(r["met"] for r in h100)  # the committed H100 run: every point at its goal, as chapter 07 says


def test_step_profiles_read_the_parts_of_the_profiled_step():
    from minids.plots.decode import step_profiles

    prof = step_profiles(h100_records())
    parts = prof[("deepseek-llm-7b", 4, "triton+compiled")]
    assert set(parts) == {"attention", "matmul", "elementwise/other", "gaps (step time - kernel time)"}
    assert parts["matmul"] == max(parts.values())  # at batch 1 the weights' matrix-vector products dominate
