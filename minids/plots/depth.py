"""Chapter 06's figure: hop_k accuracy per depth and k, from the committed run (data/results/hop_k_cuda.json)."""

from __future__ import annotations


def hop_k_heatmap(depths: dict[int, dict], k_star: dict[int, int] | None = None, threshold: float = 0.95):
    """One row per depth (the rows are the measured depths, evenly drawn, each labelled with its L and d_ff), one
    column per k; each cell shows the mean accuracy over seeds. Per row, a marker at k* (the largest k whose mean
    accuracy is >= threshold) and a red bar at the largest k that the log2 k + 2 construction reaches with L
    layers, k = 2^(L - 2): no line is drawn between rows, since the rows are not evenly spaced in L.

    `depths` is hop_depth.by_depth(records); `k_star` defaults to the largest k >= threshold of each row."""
    import matplotlib.pyplot as plt

    Ls = list(depths)
    ks = sorted(next(iter(depths.values()))["mean"])
    grid = [[depths[L]["mean"][k] for k in ks] for L in Ls]
    if k_star is None:
        k_star = {L: max([k for k in ks if depths[L]["mean"][k] >= threshold], default=-1) for L in Ls}
    n_seeds = sorted({len(depths[L]["runs"]) for L in Ls})

    fig, ax = plt.subplots(figsize=(11, 4.4))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.25, vmax=1.0, origin="lower")
    for i, L in enumerate(Ls):
        for j, k in enumerate(ks):
            m = depths[L]["mean"][k]
            ax.text(j, i, f"{m:.2f}", ha="center", va="center", fontsize=8, color="white" if m < 0.7 else "black")
    star_x = [ks.index(k_star[L]) for L in Ls if k_star[L] in ks]
    star_y = [i for i, L in enumerate(Ls) if k_star[L] in ks]
    ax.plot(star_x, star_y, "o", ms=20, mfc="none", mec="tab:red", mew=1.8,
            label=f"k*: the largest k with accuracy ≥ {threshold}")
    for i, L in enumerate(Ls):
        reach = 2 ** (L - 2)
        if reach in ks:
            x = ks.index(reach) + 0.5
            ax.plot([x, x], [i - 0.5, i + 0.5], color="tab:red", lw=3,
                    label="the construction's reach, k = 2^(L−2)" if i == 0 else None)
    ax.set_xticks(range(len(ks)), [str(k) for k in ks])
    ax.set_yticks(range(len(Ls)), [f"L{L}  (d_ff {depths[L]['d_ff']})" for L in Ls])
    ax.set_xlabel("k (hops to compose)")
    ax.set_ylabel("layers L (same parameter count)")
    seeds = "/".join(str(n) for n in n_seeds)
    ax.set_title(f"hop_k accuracy at one parameter budget, mean of {seeds} seeds (chance 0.25)", fontsize=10)
    bar = fig.colorbar(im, ax=ax, fraction=0.03)
    bar.set_label("accuracy (fraction of answers right)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=9, frameon=False)
    fig.tight_layout()
    return fig
