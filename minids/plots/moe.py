"""Figures of chapter 11 (Mixture of Experts) and its lab: the gates a router hands out, where the 16B's
parameters sit, and the quality and balance runs of `minids.experiments.moe_vs_dense`.

Every function returns the matplotlib Figure it drew; the notebooks display it, the tests read its axes.
"""

from __future__ import annotations

import torch

__all__ = ["gate_matrix", "gates", "param_parts", "quality", "imbalance", "PART_COLORS"]

# one color per part of a model, the same in every bar
PART_COLORS = {"embedding": "C0", "attention": "C1", "norms": "C7", "router": "C8", "dense FFN": "C5",
               "shared experts": "C2", "routed experts": "C3", "lm_head": "C4"}


def gate_matrix(routing, n_experts: int) -> torch.Tensor:
    """(T, E): the gate g_{i,t} where token t chose expert i, 0 elsewhere."""
    T = routing.experts.shape[0]
    return torch.zeros(T, n_experts).scatter(1, routing.experts, routing.weights.detach().float())


def _box(ax, t, i, color):
    import matplotlib.pyplot as plt

    ax.add_patch(plt.Rectangle((i - 0.5, t - 0.5), 1, 1, fill=False, ec=color, lw=1.8))


def gates(scores: torch.Tensor, routing, v3, v3_plain):
    """Three panels on the same tokens: the softmax scores with the top-k boxed, the 16B's gates (the chosen
    scores, their row sums at the right edge), and V3's renormalised sigmoid gates (red: choices the bias made)."""
    import matplotlib.pyplot as plt

    T, E = scores.shape
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6), layout="constrained")
    panels = [(scores, "softmax scores $s_{i,t}$ (boxed: top-k)", routing, "score"),
              (gate_matrix(routing, E), "16B: gates = chosen scores", routing, "gate"),
              (gate_matrix(v3, E), "V3: sigmoid + bias, renorm. x 2.5", v3, "gate")]
    for ax, (m, title, r, what) in zip(axes, panels):
        im = ax.imshow(m, cmap="viridis")
        for t, row in enumerate(r.experts.tolist()):
            for i in row:
                _box(ax, t, i, "white")
        ax.set(xlabel="routed expert i", ylabel="token t", xticks=range(E), yticks=range(T))
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, shrink=0.75, label=what)
    for t, total in enumerate(routing.weights.sum(-1).tolist()):
        axes[1].text(E - 0.4, t, f"{total:.2f}", va="center", fontsize=8, color="black")
    for t in range(T):
        for i in set(v3.experts[t].tolist()) - set(v3_plain.experts[t].tolist()):
            _box(axes[2], t, i, "red")
    axes[1].set_xlim(-0.5, E + 0.6)  # room for the row sums
    return fig


def param_parts(bars: dict[str, dict[str, int]], title: str = "where the parameters sit"):
    """One stacked horizontal bar per model: parameters by part (billions), in PART_COLORS' order."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 2.9), layout="constrained")
    top = 0.0
    for y, (label, counts) in enumerate(bars.items()):
        left = 0.0
        for part, color in PART_COLORS.items():
            width = counts.get(part, 0) / 1e9
            ax.barh(y, width, left=left, color=color, label=part if y == 0 else None)
            left += width
        ax.text(left + 0.1, y, f"{left:.2f} B", va="center", fontsize=9)
        top = max(top, left)
    ax.set_yticks(range(len(bars)), list(bars))
    ax.invert_yaxis()
    ax.set(xlabel="parameters (billions)", xlim=(0, top * 1.15), title=title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def _done(doc: dict) -> dict[str, list[dict]]:
    """The finished runs of a moe_vs_dense results document, by variant, in the experiment's order."""
    from minids.experiments.moe_vs_dense import VARIANTS

    runs = [r for r in doc["runs"] if r["status"] == "done"]
    return {v: sorted([r for r in runs if r["variant"] == v], key=lambda r: r["seed"])
            for v in VARIANTS if any(r["variant"] == v for r in runs)}


def _label(v: str, rs: list[dict]) -> str:
    r = rs[0]
    return (f"{v}: {r['n_layers']} layers, {r['params_total'] / 1e6:.1f}M total / "
            f"{r['params_active'] / 1e6:.1f}M active ({len(rs)} seeds)")


def quality(doc: dict):
    """Left: held-out loss during training, one color per variant (thick: seed mean, thin: each seed).
    Right: the final held-out loss of every seed (dots) and its mean (dash), one column per variant."""
    import matplotlib.pyplot as plt

    by_variant = _done(doc)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1.5, 1]},
                                      layout="constrained")
    for i, (v, rs) in enumerate(by_variant.items()):
        color = f"C{i}"
        steps = [e["step"] for e in rs[0]["evals"]]
        per_seed = torch.tensor([[e["val_loss"] for e in r["evals"]] for r in rs])  # (seeds, evaluations)
        for row in per_seed:
            left.plot(steps, row, color=color, lw=0.7, alpha=0.5)
        left.plot(steps, per_seed.mean(0), color=color, lw=2.2, label=_label(v, rs))
        finals = [r["final"]["val_loss"] for r in rs]
        right.scatter([i], [sum(finals) / len(finals)], color=color, marker="_", s=900, lw=2.5, zorder=2)
        right.scatter([i] * len(finals), finals, color=color, zorder=3, s=18)
    left.set(xlabel="training step", ylabel="held-out loss (nats / token)",
             title="held-out loss (thick: mean of the seeds, thin: each seed)")
    left.legend(fontsize=8, loc="upper right")
    finals = [r["final"]["val_loss"] for rs in by_variant.values() for r in rs]
    right.set(xticks=range(len(by_variant)), ylim=(min(finals) - 0.15, max(finals) + 0.1),
              ylabel="final held-out loss (nats / token)", title="after the last step (dash: mean, dots: seeds)")
    right.set_xticks(range(len(by_variant)), list(by_variant), rotation=20, fontsize=9)
    for ax in (left, right):
        ax.title.set_fontsize(10)
    return fig


def imbalance(doc: dict):
    """Expert load imbalance (max / mean tokens per expert) of the MoE variants. Left: by layer after the last
    step; right: the mean over layers during training. Lines: mean of the seeds; bands: the seeds' min-max."""
    import matplotlib.pyplot as plt

    by_variant = {v: rs for v, rs in _done(doc).items() if "imbalance" in rs[0]["final"]}
    order = list(_done(doc))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.9), sharey=True, layout="constrained")
    collapsed = None
    for v, rs in by_variant.items():
        color = f"C{order.index(v)}"
        cfg = rs[0]["config"]
        collapsed = cfg["n_routed_experts"] / cfg["n_experts_per_token"]
        first = cfg["first_dense_layers"]
        final = torch.tensor([r["final"]["imbalance"] for r in rs])  # (seeds, MoE layers)
        layers = list(range(first, first + final.shape[1]))
        left.plot(layers, final.mean(0), "o-", color=color, label=f"{v} ({len(rs)} seeds)")
        left.fill_between(layers, final.min(0).values, final.max(0).values, color=color, alpha=0.2, lw=0)
        steps = [e["step"] for e in rs[0]["evals"]]
        over = torch.tensor([[sum(e["imbalance"]) / len(e["imbalance"]) for e in r["evals"]] for r in rs])
        right.plot(steps, over.mean(0), "o-", color=color, ms=3, label=f"{v} ({len(rs)} seeds)")
        right.fill_between(steps, over.min(0).values, over.max(0).values, color=color, alpha=0.2, lw=0)
    for ax in (left, right):
        ax.axhline(1, color="gray", lw=0.8, label="even load (1)")
        if collapsed is not None:
            ax.axhline(collapsed, color="gray", ls="--", lw=0.8, label=f"collapsed (N'/K' = {collapsed:.1f})")
        ax.title.set_fontsize(10)
    right.legend(fontsize=8, loc="center right")  # the same lines in both panels: one legend
    left.set(xlabel="layer (MoE layers only)", ylabel="max / mean tokens per expert",
             title="after the last step, by layer (band: seeds min-max)")
    right.set(xlabel="training step", title="during training, mean over the MoE layers")
    return fig
