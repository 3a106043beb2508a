"""Chapter 13's LoRA figures: labelled axes, every line in a legend, the rank visible."""

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from minids.plots.lora import decomposition_figure, finetune_comparison_figure  # noqa: E402


def _w0_dw(n=64, r=8):
    g = torch.Generator().manual_seed(0)
    W0 = torch.randn(n, n, generator=g)
    dW = 2.0 * torch.randn(n, r, generator=g) @ torch.randn(r, n, generator=g)
    return W0, dW


def test_decomposition_figure_shows_the_rank():
    W0, dW = _w0_dw()
    fig = decomposition_figure(W0, dW, r=8)
    left, right = fig.axes
    assert len(left.patches) == 3 and not left.axison  # W0, B, A drawn; no axes
    assert "4,096 x 4,096" in left.get_title()
    lines = right.get_lines()
    assert len(lines) == 3 and len(right.get_legend().get_texts()) == 3
    dw_sv = lines[1].get_ydata()
    assert (dw_sv[:8] > 1e-3 * dw_sv[0]).all() and (dw_sv[8:] < 1e-4 * dw_sv[0]).all()  # rank exactly 8
    assert "index" in right.get_xlabel() and "singular value" in right.get_ylabel()


def test_finetune_comparison_figure_has_both_runs_in_the_legend():
    W0, dW = _w0_dw()
    fig = finetune_comparison_figure([5.0, 1.0, 0.1], [4.0, 2.0, 0.5], 451_840, 4_763_200, W0, dW)
    left, right = fig.axes
    labels = [t.get_text() for t in left.get_legend().get_texts()]
    assert len(left.get_lines()) == 2 and labels[0].startswith("LoRA r = 8") and "451,840" in labels[0]
    assert "4,763,200" in labels[1] and left.get_yscale() == "log"
    assert "nats" in left.get_ylabel() and left.get_xlabel() == "AdamW step"
    assert len(right.get_legend().get_texts()) == 3
