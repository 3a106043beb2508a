"""Chapter 01's figures: every line in a legend, axes labelled, one panel per placement / learning rate."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from minids.paths import project_path  # noqa: E402
from minids.plots.norm import depth_profile_figure, training_figure  # noqa: E402
from minids.results import read_results  # noqa: E402


@pytest.fixture(scope="module")
def records():
    return read_results(project_path("data", "results", "norm_placement.json"), "python -m minids.experiments.norm_placement")


def test_depth_profile_has_a_line_and_legend_entry_per_init_std(records):
    stds = sorted({r["init_std"] for r in records if r["metric"] == "stream_rms"})
    fig = depth_profile_figure(records)
    axes = fig.axes
    assert len(axes) == 4
    for ax in axes:
        assert len(ax.get_lines()) == len(stds) == 3
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == [f"init std {s}" for s in stds]
    assert [ax.get_title() for ax in axes[:2]] == ["pre-norm", "post-norm"]
    assert "RMS" in axes[0].get_ylabel() and "loss" in axes[2].get_ylabel()
    assert all("layer" in ax.get_xlabel() for ax in axes[2:])
    # the pre-norm stream line runs from the embedding (index 0) to layer 95
    assert len(axes[0].get_lines()[0].get_xdata()) == 96


def test_training_figure_has_one_panel_per_learning_rate(records):
    lrs = sorted({r["lr"] for r in records if r["metric"] == "train_loss"})
    fig = training_figure(records)
    assert len(fig.axes) == len(lrs) == 3
    for ax, lr in zip(fig.axes, lrs):
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["pre-norm", "post-norm", "chance, ln 512"]
        assert ax.get_xlabel() == "AdamW step" and f"{lr:g}" in ax.get_title()
    assert "nats" in fig.axes[0].get_ylabel()


def test_records_without_profiles_are_refused():
    with pytest.raises(ValueError, match="no 'stream_rms'"):
        depth_profile_figure([])
    with pytest.raises(ValueError, match="no 'train_loss'"):
        training_figure([])
