"""The fine-tuning transfer study's answer in one figure (chapter 13), drawn from `experiment.verdict()`.

Two panels, hop_k and names; in each, the three fine-tuning methods from the pre-trained bases, every seed's final
held-out score for the shallow-wide and the deep-narrow shape side by side, their means as bars, chance, and on
names the gate's bar (which applies to exactly this final score). A cell that the rules resolve is marked with
the shape it was resolved for.
"""

from __future__ import annotations

__all__ = ["transfer_answer_figure"]

_METHODS = ("full", "lora-attn", "lora-all")
_YLABEL = {"hop_k": "held-out accuracy, mean over k = 1..4",
           "names": "held-out exact match (1,024 functions)"}


def transfer_answer_figure(verdict: dict, chance: dict, shape_names: dict, gate_above_chance: dict | None = None):
    """verdict: experiment.verdict(results); chance: task -> chance score; shape_names: n_layers -> name;
    gate_above_chance: task -> the gate's margin over chance (drawn on names only, where it is a final-score bar)."""
    import matplotlib.pyplot as plt

    cells, shapes = verdict.get("cells") or {}, verdict.get("shapes") or {}
    if not cells or "wide" not in shapes or "deep" not in shapes:
        raise ValueError("transfer_answer_figure: the verdict has no cells or no shapes (is the results file complete?)")
    sides = (("wide", shapes["wide"], "C0", "o"), ("deep", shapes["deep"], "C3", "s"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, task in zip(axes, ("hop_k", "names")):
        for i, method in enumerate(_METHODS):
            cell = cells[f"{task} {method}"]
            for dx, (side, L, colour, marker) in zip((-0.17, 0.17), sides):
                values = cell[side]["values"]
                ax.bar(i + dx, cell[side]["mean"], width=0.3, color=colour, alpha=0.25,
                       label=f"{shape_names[L]}: seed mean" if i == 0 else None)
                ax.scatter([i + dx] * len(values), values, color=colour, marker=marker, s=20, zorder=3,
                           label=f"{shape_names[L]}: each seed" if i == 0 else None)
            if cell.get("better"):
                top = max(cell["deep"]["max"], cell["wide"]["max"])
                L = shapes[cell["better"]]
                ax.annotate(f"resolved:\nL{L} ahead", (i, top), xytext=(0, 6), textcoords="offset points",
                            ha="center", fontsize=8)
        ax.axhline(chance[task], color="gray", ls="--", lw=0.9, label=f"chance ({chance[task]:.3f})")
        if gate_above_chance and task == "names":
            bar = chance[task] + gate_above_chance[task]
            ax.axhline(bar, color="red", ls=":", lw=1.1, label=f"gate bar for full ({bar:.3f})")
        ax.set_xticks(range(len(_METHODS)), [f"{m}\nfrom pre-trained" for m in _METHODS], fontsize=9)
        ax.set_xlabel("fine-tuning method", fontsize=9)
        ax.set_ylabel(_YLABEL[task], fontsize=9)
        ax.set_title(task, fontsize=10)
        top = ax.get_ylim()[1]
        ticks = [t for t in ax.get_yticks() if 0 <= t <= top]
        ax.set_ylim(0, top * 1.55)  # room for the labels above the resolved cells, and the legend
        ax.set_yticks(ticks)  # ticks only where there are scores
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=8, loc="upper center", ncol=2)
    fig.suptitle(f"final held-out scores, 3 seeds per shape: verdict '{verdict['verdict']}'", fontsize=10)
    fig.tight_layout()
    return fig
