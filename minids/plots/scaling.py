"""Chapter 09's IsoFLOP figure: the loss profiles at each budget, and the loss-optimal model per budget against
the paper's M_opt line, each optimum marked by what set it (a true minimum, the data limit, or the grid's edge).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from .. import scaling
from ..experiments import isoflop

__all__ = ["optimum_kinds", "plot_isoflop"]

# what set each budget's lowest-loss shape: marker, face, legend text
_KINDS = {
    "minimum": ("o", "full", "a minimum: shapes on both sides trained"),
    "data limit": ("v", "none", "set by the data limit: smaller shapes skipped\n(> max_epochs passes over the corpus)"),
    "grid edge": ("s", "none", "at the edge of the grid of shapes"),
}


def optimum_kinds(result: dict) -> dict[float, str]:
    """{budget: kind} for the loss-optimal shape of each budget of an isoflop results file:

    "data limit"  it is the smallest shape trained, and a smaller one was skipped because it would pass over
                  the corpus more than max_epochs times: the true optimum may be smaller still;
    "grid edge"   it is the smallest or largest shape trained for another reason (the grid ends there, or a
                  bigger model would get too few steps);
    "minimum"     shapes on both sides of it were trained and lost more.
    """
    prof, best = isoflop.profiles(result), isoflop.best_per_budget(result)
    kinds = {}
    for budget, entry in best.items():
        names = [e["name"] for e in prof[budget]]  # by M, smallest first
        data_skipped = any(run["budget"] == budget and run["M"] < entry["M"] and "passes over the corpus" in (run.get("skip") or "")
                           for run in result["runs"])
        if entry["name"] == names[0] and data_skipped:
            kinds[budget] = "data limit"
        elif entry["name"] in (names[0], names[-1]):
            kinds[budget] = "grid edge"
        else:
            kinds[budget] = "minimum"
    return kinds


def plot_isoflop(result: dict, label: str):
    """Left: validation loss against M at each budget (every seed as a dot, the mean as a line, the lowest
    circled, the paper's M_opt(C) dotted). Right: the lowest-loss M per budget, marked by what set it
    (optimum_kinds), against the paper's M_opt = 0.1715 C^0.5243."""
    prof, best, kinds = isoflop.profiles(result), isoflop.best_per_budget(result), optimum_kinds(result)
    fig, (ax, ax_opt) = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    for i, (budget, entries) in enumerate(prof.items()):
        color = f"C{i}"
        ax.plot([e["M"] for e in entries], [e["val_loss"] for e in entries], "o-", color=color, label=f"C = {budget:.0e}")
        for e in entries:  # every seed, when there are several
            ax.scatter([e["M"]] * len(e["val_losses"]), e["val_losses"], color=color, s=8, alpha=0.5)
        ax.scatter([best[budget]["M"]], [best[budget]["val_loss"]], s=180, facecolors="none", edgecolors=color, lw=2)
        ax.axvline(scaling.optimal_allocation(budget)[0], color=color, ls=":", lw=1.2)
        marker, fill, _ = _KINDS[kinds[budget]]
        ax_opt.plot([budget], [best[budget]["M"]], marker, color=color, ms=10, mew=2, fillstyle=fill, zorder=3)
    C = np.logspace(np.log10(min(prof)) - 0.5, np.log10(max(prof)) + 0.5, 20)
    ax_opt.loglog(C, scaling.optimal_allocation(C)[0], "k--", label=r"paper: $M_{opt} = 0.1715\,C^{0.5243}$")
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], marker="o", ls="none", mfc="none", mec="gray", ms=11, mew=2, label="lowest mean loss"),
                Line2D([], [], color="gray", ls=":", label="paper's $M_{opt}(C)$ (budget's color)")]
    ax.legend(handles=handles, fontsize=8)
    ax.set(xscale="log", xlabel="model scale M (FLOPs per token)", ylabel="validation loss (nats per byte)",
           title=f"{label}: IsoFLOP profiles")
    kinds_used = [k for k in _KINDS if k in kinds.values()]
    handles = [ax_opt.get_lines()[-1]] + [
        Line2D([], [], marker=_KINDS[k][0], ls="none", color="gray", fillstyle=_KINDS[k][1], ms=9, mew=2,
               label=_KINDS[k][2]) for k in kinds_used]
    ax_opt.legend(handles=handles, fontsize=8, loc="upper left")
    ax_opt.set(xlabel="compute budget C (FLOPs)", ylabel="loss-optimal M (FLOPs per token)",
               title="lowest-loss M per budget (color = budget)")
    ax.xaxis.set_minor_formatter(plt.NullFormatter())  # label the decades only
    ax_opt.yaxis.set_minor_formatter(plt.NullFormatter())
    for a in (ax, ax_opt):
        a.grid(True, alpha=0.3)
    return fig
