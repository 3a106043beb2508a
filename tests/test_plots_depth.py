"""minids.plots.depth draws chapter 06's heatmap readably from the committed results."""

import matplotlib

matplotlib.use("Agg")

from minids.experiments import hop_depth  # noqa: E402
from minids.paths import project_path  # noqa: E402
from minids.plots.depth import hop_k_heatmap  # noqa: E402


def test_heatmap_labels_and_markers():
    records = hop_depth.load_results(str(project_path("data", "results", "hop_k_cuda.json")))
    depths = hop_depth.by_depth(records)
    k_star = {int(L): k for L, k in hop_depth.verdict(records)["k_star"].items()}
    fig = hop_k_heatmap(depths, k_star)
    ax, bar = fig.axes
    assert ax.get_xlabel() == "k (hops to compose)" and "layers" in ax.get_ylabel()
    assert "accuracy" in bar.get_ylabel()
    assert [t.get_text() for t in ax.get_yticklabels()][0].startswith("L2")
    cells = [t for t in ax.texts]
    assert len(cells) == len(depths) * 17 and min(t.get_fontsize() for t in cells) >= 8
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == 2 and legend[0].startswith("k*")
    # one k* marker per depth, at the measured k*: 4 and 9 and 14 for 2, 3, 4 layers
    (stars,) = [l for l in ax.lines if l.get_marker() == "o"]
    assert list(stars.get_xdata())[:3] == [4, 9, 14] and len(stars.get_xdata()) == len(depths)
