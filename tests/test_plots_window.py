"""minids.plots.window: every figure of chapter 12 and its lab has labelled axes and one legend entry per line."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from minids.attention import sliding_window_mask
from minids.experiments import window_reach
from minids.paths import project_path
from minids.plots import window as plots
from minids.results import read_results


def _legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_masks_one_labelled_panel_per_mask():
    fig = plots.masks({"a": sliding_window_mask(8, 0, 3), "b": sliding_window_mask(8, 0, None)})
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
    assert all(ax.get_xlabel() == "key position s" and ax.get_ylabel() == "query position q" for ax in fig.axes)
    plt.close(fig)


def test_attention_maps_titles_say_the_window_and_the_colorbar_is_labelled():
    maps = [torch.rand(1, 2, 5, 5) for _ in range(3)]
    fig = plots.attention_maps(maps, [4, None, 4])
    panels, colorbar = fig.axes[:3], fig.axes[3]
    assert [ax.get_title() for ax in panels] == ["layer 0, head 0 (window 4)", "layer 1, head 0 (full)",
                                                 "layer 2, head 0 (window 4)"]
    assert colorbar.get_ylabel() == "attention weight"
    plt.close(fig)


def test_influence_every_line_in_a_legend_with_its_reach():
    change = torch.tensor([1.0, 0.5, 0.1, 0.0, 0.0])
    fig = plots.influence([("W = 3", [("L = 1", change, 2), ("L = 2", change, 4)]), ("full", [("S F", change, None)])])
    left, right = fig.axes
    assert _legend(left) == ["L = 1 (reach 2)", "L = 2 (reach 4)"] and _legend(right) == ["S F (reach: all)"]
    assert left.get_ylabel() == "max |change of a logit|" and "positions" in left.get_xlabel()
    assert min(left.lines[0].get_ydata()) == pytest.approx(1e-22)  # exact zeros drawn at the floor
    plt.close(fig)


def test_kv_cache_axes_and_legend():
    fig = plots.kv_cache({"7B": {"full": [1, 2], "window": [1, 1]}, "67B": {"full": [2, 4], "window": [2, 2]}},
                         [1024, 2048])
    for ax in fig.axes:
        assert _legend(ax) == ["full", "window"]
        assert ax.get_xlabel() == "context length (tokens)" and "GiB" in ax.get_ylabel()
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1K", "2K"]
    plt.close(fig)


def test_practical_reach_both_panels_labelled_and_in_a_legend():
    records = read_results(project_path("data", "results", "window_reach_cuda.json"), "window_reach")
    depths = window_reach.by_depth(records)
    fig = plots.practical_reach(depths, chance=1 / 16)
    left, right = fig.axes
    assert _legend(right) == [f"L = {L}" for L in depths] == ["L = 1", "L = 2", "L = 4", "L = 8"]
    assert _legend(left)[:4] == [f"L = {L}, reach L(W-1) = {7 * L} (3 seeds)" for L in (1, 2, 4, 8)]
    assert "chance (0.0625)" in _legend(left) and "W - 1 = 7 (one layer)" in _legend(left)
    assert right.get_ylabel() == "practical reach R (positions, seed mean)" and right.get_xlabel() == "training step"
    assert left.get_ylabel() == "held-out accuracy"
    plt.close(fig)
