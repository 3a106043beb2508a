"""minids.plots.scaling: which optimum each budget's lowest loss is, and the IsoFLOP figure's labels."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from minids.paths import project_path  # noqa: E402
from minids.plots.scaling import optimum_kinds, plot_isoflop  # noqa: E402
from minids.results import read_results  # noqa: E402


def run(budget, M, loss=None, skip=None):
    return {"budget": budget, "name": f"M{M}", "M": M, "tokens": int(budget // M), "val_loss": loss, "skip": skip}


def synthetic():
    runs = [run(1e10, 10, 3.0), run(1e10, 20, 2.5), run(1e10, 40, 2.8),                    # a U: minimum at 20
            run(1e11, 10, skip="9.0 passes over the corpus > max_epochs 4.0: too small"),
            run(1e11, 20, 2.0), run(1e11, 40, 2.2),                                          # data limit at 20
            run(1e12, 20, 1.9), run(1e12, 40, 1.8), run(1e12, 80, skip="3 steps < min_steps 40")]  # grid edge
    return {"runs": runs, "budgets": [1e10, 1e11, 1e12]}


def test_optimum_kinds():
    assert optimum_kinds(synthetic()) == {1e10: "minimum", 1e11: "data limit", 1e12: "grid edge"}


def test_committed_gpu_run_is_data_limited_from_3e11():
    res = read_results(project_path("data", "results", "isoflop_cuda.json"), "python -m minids.experiments.isoflop")
    assert optimum_kinds(res) == {1e11: "minimum", 3e11: "data limit", 1e12: "data limit", 3e12: "data limit"}


def test_plot_isoflop_labels_and_legends():
    fig = plot_isoflop(synthetic(), "toy")
    ax, ax_opt = fig.axes
    assert "nats per byte" in ax.get_ylabel() and "FLOPs per token" in ax.get_xlabel()
    assert "FLOPs" in ax_opt.get_xlabel() and "FLOPs per token" in ax_opt.get_ylabel()
    left = [t.get_text() for t in ax.get_legend().get_texts()]
    assert left[:3] == ["C = 1e+10", "C = 1e+11", "C = 1e+12"] and "lowest mean loss" in left
    right = [t.get_text() for t in ax_opt.get_legend().get_texts()]
    assert right[0].startswith("paper") and any("data limit" in t for t in right) and any("edge" in t for t in right)
    assert any("a minimum" in t for t in right) and len(right) == 4
    plt.close(fig)
