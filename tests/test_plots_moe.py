"""minids.plots.moe: every figure of chapter 11 and its lab has labelled axes and one legend entry per line."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from minids.moe import route
from minids.paths import project_path
from minids.plots import moe as plots
from minids.results import read_results


@pytest.fixture(scope="module")
def doc():
    return read_results(project_path("data", "results", "moe_vs_dense_cuda.json"), "moe_vs_dense")


def _legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_gate_matrix_places_the_gates():
    r = route(torch.randn(5, 8), 2)
    m = plots.gate_matrix(r, 8)
    assert m.shape == (5, 8) and torch.equal((m > 0).sum(-1), torch.full((5,), 2))
    assert torch.allclose(m.sum(-1), r.weights.sum(-1))


def test_gates_draws_three_labelled_panels():
    logits = torch.randn(6, 8)
    r, v3 = route(logits, 2), route(logits, 2, "sigmoid", True, 2.5, bias=torch.linspace(-0.1, 0.1, 8))
    fig = plots.gates(logits.softmax(-1), r, v3, route(logits, 2, "sigmoid", True, 2.5))
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 3
    assert all(ax.get_xlabel() == "routed expert i" and ax.get_ylabel() == "token t" for ax in panels)
    colorbars = [ax for ax in fig.axes if not ax.get_title()]
    assert sorted(ax.get_ylabel() for ax in colorbars) == ["gate", "gate", "score"]
    assert len([t for t in panels[1].texts]) == 6  # one row sum per token
    plt.close(fig)


def test_param_parts_one_bar_per_model_and_every_part_in_the_legend():
    fig = plots.param_parts({"a": {"embedding": 2e9, "routed experts": 5e9}, "b": {"attention": 1e9}})
    ax = fig.axes[0]
    assert ax.get_xlabel() == "parameters (billions)"
    assert _legend(ax) == list(plots.PART_COLORS)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert [t.get_text() for t in ax.texts] == ["7.00 B", "1.00 B"]
    plt.close(fig)


def test_quality_one_legend_entry_per_variant(doc):
    fig = plots.quality(doc)
    left, right = fig.axes
    assert left.get_xlabel() == "training step" and "nats / token" in left.get_ylabel()
    assert "nats / token" in right.get_ylabel()
    labels = _legend(left)
    assert [x.split(":")[0] for x in labels] == ["dense", "moe", "dense-deep", "moe-noaux", "moe-bias"]
    assert all("(3 seeds)" in x for x in labels)
    assert len(left.lines) == 5 * 3 + 5  # a thin line per seed, a thick mean per variant
    assert [t.get_text() for t in right.get_xticklabels()] == ["dense", "moe", "dense-deep", "moe-noaux", "moe-bias"]
    plt.close(fig)


def test_imbalance_draws_the_three_moe_variants(doc):
    fig = plots.imbalance(doc)
    left, right = fig.axes
    labels = _legend(right)  # one legend for both panels: the same variants, the same colors
    assert labels[:3] == ["moe (3 seeds)", "moe-noaux (3 seeds)", "moe-bias (3 seeds)"]
    assert "even load (1)" in labels and any(x.startswith("collapsed") for x in labels)
    assert [line.get_color() for line in left.lines] == [line.get_color() for line in right.lines]
    assert left.get_xlabel() and right.get_xlabel() == "training step"
    assert left.get_ylabel() == "max / mean tokens per expert"
    assert list(left.lines[0].get_xdata()) == list(range(1, 10))  # layers 1-9: layer 0 is dense
    plt.close(fig)
