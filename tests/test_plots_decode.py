import copy
import json

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from minids.paths import project_path  # noqa: E402
from minids.plots.decode import dates, decode_floor_figure, floor_fractions  # noqa: E402


def records_with_an_after_day():
    """The committed results plus a made-up later day: the same points at 1.2 x the fraction, kernel "triton"."""
    with open(project_path("benchmarks", "results", "batched_decode_gpu.json")) as f:
        old = json.load(f)
    first = dates(old)[0]
    old = [r for r in old if r.get("date") == first or r.get("impl") == "transformers"]
    later = []
    for r in old:
        if r.get("metric") == "decode_frac_of_bandwidth_floor" and r["impl"] == "minids":
            r2 = copy.deepcopy(r)
            r2.update(date="2099-01-01", value=round(min(r["value"] * 1.2, 0.99), 4), decode_attention="triton",
                      compile_layers=True)
            later.append(r2)
    return old, old + later, first


def test_floor_fractions_takes_the_best_kernel_of_the_day():
    recs = [dict(metric="decode_frac_of_bandwidth_floor", impl="minids", model="m", kv_heads=8, context=2048, batch=1,
                 date="d", value=v, decode_attention=k) for v, k in ((0.4, "sdpa"), (0.6, "einsum"), (0.5, "sdpa"))]
    recs.append(dict(recs[0], date="other", value=0.9))
    assert floor_fractions(recs, "d") == {("m", 8, 2048): {1: (0.6, "einsum")}}


def test_figure_has_a_panel_per_model_and_before_after_lines():
    old, both, first = records_with_an_after_day()
    fig = decode_floor_figure(both)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["7B (MHA)", "7B (GQA, 8 KV heads)", "7B (GQA, 4 KV heads)",
                                              "67B (GQA, 8 KV heads)"]
    assert all(ax.get_ylabel() == "% of the weights + KV floor" for ax in axes)
    assert all(ax.get_xlabel() == "batch B (sequences)" for ax in axes)
    # GQA-8: before and after at 2K and 4K, and the two goal lines
    assert [line.get_label() for line in axes[1].get_lines()] == [
        f"{first}, T=2K", "2099-01-01, T=2K", f"{first}, T=4K", "2099-01-01, T=4K"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]  # one legend for the figure
    assert labels == [f"{first}, T=2K", "2099-01-01, T=2K", "transformers, T=2K", f"{first}, T=4K",
                      "2099-01-01, T=4K", "goal 75% (B 1-4)", "goal 80% (B >= 8)"]
    # the "after" line's points are the made-up fractions, in percent
    after = next(line for line in axes[1].get_lines() if line.get_label() == "2099-01-01, T=2K")
    want = floor_fractions(both, "2099-01-01")[("deepseek-llm-7b", 8, 2048)]
    assert list(after.get_xdata()) == list(want)
    assert list(after.get_ydata()) == pytest.approx([100 * f for f, _ in want.values()])
    matplotlib.pyplot.close(fig)


def test_one_day_draws_only_that_day_and_no_records_is_an_error():
    old, _, first = records_with_an_after_day()
    fig = decode_floor_figure(old)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == [f"{first}, T=2K", "transformers, T=2K", f"{first}, T=4K", "goal 75% (B 1-4)",
                      "goal 80% (B >= 8)"]
    matplotlib.pyplot.close(fig)
    with pytest.raises(ValueError, match="no minids"):
        decode_floor_figure([])
