"""Chapter 03's figures: attention maps of a few heads, the per-head pattern scores of a trained model, the
maps of the heads that score best, and the KV cache of the 7B / 67B variants.

Each function takes tensors the chapter computed (maps from `model.attention_weights`) and returns the Figure.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

__all__ = ["plot_head_grid", "head_scores", "plot_head_scores", "plot_head_maps", "plot_kv_cache"]


def plot_head_grid(rows: dict[str, torch.Tensor], n_rep: int, title: str):
    """One row of attention maps per entry of `rows` ({row label: (h, t, s) weights}), one column per head,
    titled with the head and the KV head it reads (j // n_rep); one shared, labelled colorbar."""
    n_heads = next(iter(rows.values())).shape[0]
    fig, axes = plt.subplots(len(rows), n_heads, figsize=(2.5 * n_heads + 1.2, 2.7 * len(rows) + 0.6),
                             squeeze=False, layout="constrained")
    for row, (label, maps) in enumerate(rows.items()):
        for h in range(n_heads):
            ax = axes[row, h]
            im = ax.imshow(maps[h], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"{label}: head {h} (KV head {h // n_rep})", fontsize=9)
            ax.set_xlabel("key position s", fontsize=9)
            ax.tick_params(labelsize=8)
        axes[row, 0].set_ylabel("query position t", fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.colorbar(im, ax=axes, shrink=0.8, label="attention weight (each row sums to 1)")
    return fig


def head_scores(maps: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Three (layer, head) scores from maps (layer, h, t, s) of one sequence ids (t,), whose position 0 is bos:

    previous token  mean weight on the key just before the query (s = t - 1), over queries 1 .. t - 1;
    first token     mean weight on position 0 (the attention sink), over queries 1 .. t - 1;
    induction       mean weight on the keys right after an earlier copy of the query's token (ids[s - 1] ==
                    ids[t], s - 1 < t), over the queries that have such an earlier copy.
    """
    t_len = maps.shape[-1]
    t = torch.arange(1, t_len)
    earlier_copy = (ids[None, :-1] == ids[:, None]) & (torch.arange(t_len - 1)[None, :] < torch.arange(t_len)[:, None])
    target = torch.cat([torch.zeros(t_len, 1, dtype=torch.bool), earlier_copy], dim=1)  # the key AFTER the copy
    has_target = target.any(-1)
    return {
        "previous token": maps[:, :, t, t - 1].mean(-1),
        "first token (sink)": maps[:, :, 1:, 0].mean(-1),
        "induction": (maps * target).sum(-1)[:, :, has_target].mean(-1),
    }


def plot_head_scores(scores: dict[str, torch.Tensor], threshold: float = 0.5):
    """One (layer x head) heatmap per score, every head a cell, the best head of each score circled and
    named, the number of heads above `threshold` in each title; one labelled colorbar."""
    fig, axes = plt.subplots(1, len(scores), figsize=(4.2 * len(scores) + 1, 3.9), layout="constrained")
    for ax, (name, score) in zip(axes, scores.items()):
        n_layers, n_heads = score.shape
        im = ax.imshow(score, cmap="magma", vmin=0, vmax=1, aspect="auto")
        layer, head = divmod(int(score.argmax()), n_heads)
        ax.plot(head, layer, "o", mfc="none", mec="tab:cyan", ms=12, mew=2,
                label=f"best: L{layer}.h{head}, {score.max():.2f}")
        above = int((score > threshold).sum())
        ax.set_title(f"{name}\n{above} of {score.numel()} heads above {threshold}", fontsize=10)
        ax.set_xlabel("head (query head index)", fontsize=9)
        ax.set_ylabel("layer", fontsize=9)
        ax.set_xticks(range(0, n_heads, 2))
        ax.set_yticks(range(n_layers))
        ax.tick_params(labelsize=8)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, frameon=False)
    fig.colorbar(im, ax=axes, shrink=0.9, label="mean attention weight")
    return fig


def plot_head_maps(maps: torch.Tensor, labels: list[str], picks: dict[str, tuple[int, int]], n_rep: int,
                   every: int = 3):
    """The full (t, s) map of one head per entry of picks ({name: (layer, head)}), token labels on both axes
    (every `every`-th, size 8, so they stay legible), one labelled colorbar."""
    fig, axes = plt.subplots(1, len(picks), figsize=(4.6 * len(picks) + 1, 5.2), layout="constrained")
    ticks = list(range(0, len(labels), every))
    for ax, (name, (layer, head)) in zip(axes, picks.items()):
        im = ax.imshow(maps[layer, head], cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"{name}\nL{layer}.h{head} (KV head {head // n_rep})", fontsize=10)
        ax.set_xticks(ticks, [labels[i] for i in ticks], fontsize=8, rotation=90)
        ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=8)
        ax.set_xlabel("key token s", fontsize=9)
        ax.set_ylabel("query token t", fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.8, label="attention weight")
    return fig


def plot_kv_cache(per_token_kib: dict[str, float], cache_gib_at, weights_gib: float, context: int = 4096,
                  batch: int = 32):
    """Left: KV cache per token of each variant (bars, labelled). Right: its cache at `batch` sequences over the
    context length, cache_gib_at(name, tokens) -> GiB, against the bf16 weights (dashed)."""
    colors = ["tab:gray", "tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange"]
    names = list(per_token_kib)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11.5, 4.0), layout="constrained")
    bars = ax1.barh(names, list(per_token_kib.values()), color=colors[: len(names)])
    ax1.bar_label(bars, labels=[f"{v:,g} KiB" for v in per_token_kib.values()], padding=3, fontsize=9)
    ax1.invert_yaxis()
    ax1.set_xlim(0, 1.35 * max(per_token_kib.values()))
    ax1.set(xlabel="KV cache per token, bf16 (KiB)", title="KV cache per token")
    tokens = list(range(0, context + 1, 64))
    for name, color in zip(names, colors):
        ax2.plot(tokens, [cache_gib_at(name, n) for n in tokens], label=name, color=color)
    ax2.axhline(weights_gib, color="black", ls="--", lw=1, label=f"67B weights, bf16 ({weights_gib:.0f} GiB)")
    ax2.set(xlabel="context length (tokens)", ylabel=f"KV cache at batch {batch} (GiB)",
            title=f"KV cache at batch {batch}")
    ax2.legend(fontsize=8)
    return fig
