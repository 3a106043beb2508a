"""minids.plots.performance draws chapter 10's MFU bars from the committed records, grouped and sorted."""

import json

import matplotlib

matplotlib.use("Agg")

from minids.paths import project_path  # noqa: E402
from minids.plots.performance import mfu_bars, mfu_rows  # noqa: E402


def _records():
    return {n: json.load(open(project_path("benchmarks", "results", f"{n}.json"))) for n in ("prefill", "train", "h200_67b")}


def test_rows_are_grouped_and_sorted():
    rows = mfu_rows(_records())
    groups = list(dict.fromkeys(r["workload"] for r in rows))
    assert groups[0] == "7B prefill, 1×4096 tokens" and len(groups) == 5
    for g in groups:
        values = [r["mfu"] for r in rows if r["workload"] == g]
        assert values == sorted(values, reverse=True)
    assert not any(".json" in r["workload"] or "h200_67b" in r["workload"] for r in rows)


def test_bars_have_labels_legend_and_no_goal_lines():
    fig = mfu_bars(_records())
    (ax,) = fig.axes
    assert "MFU" in ax.get_xlabel() and "TFLOP/s" in ax.get_xlabel()
    assert len(ax.get_yticklabels()) == len(mfu_rows(_records()))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["minids", "transformers"]
    assert not ax.lines  # no vertical goal lines
    assert min(t.get_fontsize() for t in ax.get_yticklabels()) >= 8
