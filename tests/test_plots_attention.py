"""minids.plots.attention: the figures chapter 03 and its lab draw, checked for labels, legends and scores."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from minids.plots.attention import head_scores, plot_head_grid, plot_head_maps, plot_head_scores, plot_kv_cache  # noqa: E402


def uniform_causal(layers, heads, t):
    w = torch.tril(torch.ones(t, t))
    return (w / w.sum(-1, keepdim=True)).expand(layers, heads, t, t).clone()


def test_head_scores_find_planted_heads():
    ids = torch.tensor([1, 5, 6, 7, 5, 6, 7, 5])  # bos, then a block repeated: induction targets exist
    t = len(ids)
    maps = uniform_causal(2, 3, t)
    maps[1, 2] = torch.diag(torch.ones(t - 1), -1) + torch.eye(t) * (torch.arange(t) == 0)  # previous-token head
    maps[0, 1] = 0
    maps[0, 1, :, 0] = 1  # sink head
    scores = head_scores(maps, ids)
    assert set(scores) == {"previous token", "first token (sink)", "induction"}
    assert all(s.shape == (2, 3) for s in scores.values())
    assert divmod(int(scores["previous token"].argmax()), 3) == (1, 2) and scores["previous token"].max() == 1
    assert divmod(int(scores["first token (sink)"].argmax()), 3) == (0, 1)
    # a previous-token head on a period-3 sequence is not an induction head; uniform heads score about 1/t
    assert scores["induction"][1, 2] == 0 and 0 < scores["induction"][0, 0] < 0.5


def test_plot_head_scores_labels_and_best_heads():
    scores = {"a": torch.rand(4, 6), "b": torch.rand(4, 6)}
    fig = plot_head_scores(scores, threshold=0.5)
    axes = fig.axes[:2]
    for ax, (name, s) in zip(axes, scores.items()):
        assert ax.get_xlabel().startswith("head") and ax.get_ylabel() == "layer"
        assert f"{int((s > 0.5).sum())} of 24 heads above 0.5" in ax.get_title()
        assert len(ax.get_legend().get_texts()) == 1 and "best: L" in ax.get_legend().get_texts()[0].get_text()
    assert fig.axes[-1].get_ylabel() == "mean attention weight"  # the colorbar
    plt.close(fig)


def test_grid_and_maps_have_readable_labels():
    fig = plot_head_grid({"at init": torch.rand(4, 6, 6), "trained": torch.rand(4, 6, 6)}, n_rep=2, title="x")
    assert len(fig.axes) == 9 and "attention weight" in fig.axes[-1].get_ylabel()
    assert fig.axes[5].get_title() == "trained: head 1 (KV head 0)"
    plt.close(fig)
    labels = [f"tok{i}" for i in range(10)]
    fig = plot_head_maps(torch.rand(2, 2, 10, 10), labels, {"p": (0, 1), "q": (1, 0)}, n_rep=2, every=3)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["tok0", "tok3", "tok6", "tok9"]
    assert min(t.get_fontsize() for t in ax.get_xticklabels()) >= 8
    assert ax.get_xlabel() == "key token s" and fig.axes[-1].get_ylabel() == "attention weight"
    plt.close(fig)


def test_kv_cache_figure_has_every_variant_in_the_legend():
    per_token = {"MHA": 480.0, "GQA": 380.0}
    fig = plot_kv_cache(per_token, lambda name, n: per_token[name] * n * 32 / 2**20, weights_gib=125.6)
    left, right = fig.axes
    assert "KiB" in left.get_xlabel() and "GiB" in right.get_ylabel() and "tokens" in right.get_xlabel()
    legend = [t.get_text() for t in right.get_legend().get_texts()]
    assert legend[:2] == ["MHA", "GQA"] and "67B weights" in legend[2] and len(right.get_lines()) == 3
    plt.close(fig)
