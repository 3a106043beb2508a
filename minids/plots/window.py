"""Figures of chapter 12 (sliding windows) and its lab: masks, attention maps, the influence of one token
against distance, the KV cache against context, and the practical reach of trained windowed stacks.

Every function returns the matplotlib Figure it drew; the notebooks display it, the tests read its axes.
"""

from __future__ import annotations

import torch

__all__ = ["masks", "attention_maps", "influence", "kv_cache", "practical_reach"]


def masks(named: dict[str, torch.Tensor]):
    """One panel per boolean (t, s) mask: which key position s each query position q may see."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(named), figsize=(3.7 * len(named), 3.9), layout="constrained")
    for ax, (name, m) in zip(axes, named.items()):
        ax.imshow(m, cmap="Blues", vmin=0, vmax=1.3)
        ax.set(xlabel="key position s", ylabel="query position q", xticks=range(0, m.shape[1], 2),
               yticks=range(0, m.shape[0], 2))
        ax.set_title(name, fontsize=9)
    return fig


def attention_maps(maps: list[torch.Tensor], windows: list[int | None], head: int = 0):
    """Head `head` of the first sequence in each layer's (b, h, t, s) attention weights, with its window."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(maps), figsize=(3.7 * len(maps) + 1, 3.7), layout="constrained")
    for i, (ax, weights, w) in enumerate(zip(axes, maps, windows)):
        im = ax.imshow(weights[0, head].detach().float(), cmap="viridis", vmin=0, vmax=1)
        t, s = weights.shape[-2:]
        ax.set(xlabel="key position s", ylabel="query position q", xticks=range(0, s, 2), yticks=range(0, t, 2))
        ax.set_title(f"layer {i}, head {head} ({'window ' + str(w) if w else 'full'})", fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.8, label="attention weight")
    return fig


def influence(groups: list[tuple[str, list[tuple[str, torch.Tensor, int | None]]]], floor: float = 1e-22):
    """One panel per group: for each (label, change, reach), the largest change of a logit against the distance
    from the perturbed token (change[0] is the token itself), on a log scale with exact zeros drawn at `floor`;
    a dotted line at the theoretical reach where there is one."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 4.6), sharey=True, layout="constrained")
    for ax, (title, lines) in zip(axes, groups):
        for i, (label, change, reach) in enumerate(lines):
            d = torch.arange(len(change))
            ax.plot(d, change.clamp(min=floor), color=f"C{i}",
                    label=label + (f" (reach {reach})" if reach is not None else " (reach: all)"))
            if reach is not None:
                ax.axvline(reach, color=f"C{i}", ls=":", lw=1)
        ax.axhline(floor, color="gray", lw=0.8)
        ax.set(xlabel="distance d = position - p (positions)", yscale="log")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=2)  # below: no line hidden
    axes[0].set_ylabel("max |change of a logit|")
    axes[0].text(1, floor * 10, "exactly 0", fontsize=8, color="gray")
    fig.suptitle("Influence of the token at p against distance; dotted: the theoretical reach L (W - 1)",
                 fontsize=11)
    return fig


def kv_cache(curves: dict[str, dict[str, list[float]]], lengths: list[int]):
    """One panel per model: KV-cache GiB per sequence against context length, one line per attention pattern."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.6 * len(curves), 3.9), sharey=True, layout="constrained")
    for ax, (model, lines) in zip(axes, curves.items()):
        for i, (label, gib) in enumerate(lines.items()):
            ax.plot(lengths, gib, marker=".", color=f"C{i}", label=label)
        ax.set(xlabel="context length (tokens)", ylabel="KV cache per sequence (GiB, bf16)", xscale="log",
               yscale="log")
        ax.set_xticks(lengths, [f"{t // 1024}K" for t in lengths])
        ax.set_xticks([], minor=True)
        ax.set_title(f"{model}: KV cache per sequence", fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
    return fig


def practical_reach(depths: dict[int, dict], chance: float):
    """The window_reach experiment (`minids.experiments.window_reach.by_depth`). Left: held-out recall accuracy
    against the distance d to the value token, per depth L (seed mean, band: seed min-max, dotted: L (W - 1)).
    Right: the practical reach R (seed mean) during training, per depth, with L (W - 1) dotted."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [2, 1]},
                                      layout="constrained")
    w = next(iter(depths.values()))["window"]
    for i, (L, e) in enumerate(depths.items()):
        ds = sorted(e["mean"])
        accs = [[dict(zip(r["d"], r["accuracy"]))[d] for r in e["runs"]] for d in ds]
        label = f"L = {L}, reach L(W-1) = {e['theoretical_reach']} ({len(e['runs'])} seeds)"
        left.plot(ds, [e["mean"][d] for d in ds], color=f"C{i}", label=label)
        left.fill_between(ds, [min(a) for a in accs], [max(a) for a in accs], color=f"C{i}", alpha=0.2, lw=0)
        left.axvline(e["theoretical_reach"], color=f"C{i}", ls=":", lw=1.2)
        curve: dict[int, list[float]] = {}
        for r in e["runs"]:
            for point in r["curve"]:
                curve.setdefault(point["step"], []).append(point["practical_reach"])
        steps = sorted(curve)
        right.plot(steps, [sum(curve[s]) / len(curve[s]) for s in steps], marker="o", color=f"C{i}",
                   label=f"L = {L}")
        right.axhline(e["theoretical_reach"], color=f"C{i}", ls=":", lw=1.2)
    left.axhline(chance, color="gray", ls="--", lw=1, label=f"chance ({chance:g})")
    left.axvline(w - 1, color="black", lw=0.8, label=f"W - 1 = {w - 1} (one layer)")
    left.set(xlabel="distance d to the value token (positions)", ylabel="held-out accuracy", ylim=(-0.02, 1.02))
    left.set_title(f"recall at distance d, W = {w} (band: seeds min-max)", fontsize=10)
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3)  # below: no line hidden
    right.set(xlabel="training step", ylabel="practical reach R (positions, seed mean)")
    right.set_title("R during training; dotted: L (W - 1)", fontsize=10)
    right.legend(fontsize=8, loc="upper left")
    return fig
