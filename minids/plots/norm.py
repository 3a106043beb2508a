"""Chapter 01's figures: the depth profile of a 95-layer stack at init, pre-norm against post-norm, and the
training losses of the two placements.

Both read the records of `data/results/norm_placement.json` (written by `minids.experiments.norm_placement`).
"""

from __future__ import annotations

import math

__all__ = ["depth_profile_figure", "training_figure"]

_COLOURS = ("C0", "C1", "C3", "C2", "C4")


def _profiles(records: list[dict]) -> tuple[dict, list[float]]:
    profiles = {(r["init_std"], r["placement"], r["metric"]): r["value"] for r in records
                if r["metric"] in ("stream_rms", "param_grad_norm")}
    stds = sorted({std for std, _, _ in profiles})
    if not stds:
        raise ValueError("depth_profile_figure: no 'stream_rms' / 'param_grad_norm' records in the results")
    return profiles, stds


def depth_profile_figure(records: list[dict]):
    """2 x 2 panels: rows = RMS of the residual stream / gradient norm per layer, columns = pre / post-norm.

    One line per init std in every panel, each in the panel's legend; the placements get separate columns so
    that their lines never hide each other (post-norm's stream is RMS 1 after every layer at every std, so its
    three lines coincide there: the panel says so).
    """
    import matplotlib.pyplot as plt

    profiles, stds = _profiles(records)
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4), sharey="row", sharex=True)
    for col, placement in enumerate(("pre", "post")):
        top, bottom = axes[0][col], axes[1][col]
        for colour, std in zip(_COLOURS, stds):
            rms = profiles[std, placement, "stream_rms"]
            grad = profiles[std, placement, "param_grad_norm"]
            # Thick under thin, so that lines which coincide stay visible.
            width = 3.2 - 1.0 * stds.index(std)
            top.semilogy(range(len(rms)), rms, color=colour, lw=width, label=f"init std {std}")
            bottom.semilogy(range(1, len(grad) + 1), grad, color=colour, lw=width, label=f"init std {std}")
        top.set_title(f"{placement}-norm", fontsize=11)
        bottom.set_xlabel("layer (0 = embedding output)", fontsize=9)
        for ax in (top, bottom):
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8, loc="best")
            ax.tick_params(labelsize=8)
    axes[0][0].set_ylabel("RMS of the residual stream\n(after layer i, no unit)", fontsize=9)
    axes[1][0].set_ylabel("‖∂loss/∂(layer i's parameters)‖\n(nats per unit weight)", fontsize=9)
    axes[0][1].text(0.5, 0.3, "RMS 1 after every layer at every init std:\nthe three lines coincide",
                    transform=axes[0][1].transAxes, ha="center", fontsize=9, color="#333333")
    n_layers = len(profiles[stds[0], "pre", "param_grad_norm"])
    fig.suptitle(f"{n_layers}-layer stack at initialisation, one batch: scale of the stream and of the gradient",
                 fontsize=11)
    fig.tight_layout()
    return fig


def training_figure(records: list[dict]):
    """One panel per learning rate: the training loss of pre-norm (solid) and post-norm (dashed), chance dotted."""
    import matplotlib.pyplot as plt

    runs = {(r["placement"], r["lr"]): r for r in records if r["metric"] == "train_loss"}
    if not runs:
        raise ValueError("training_figure: no 'train_loss' records in the results (run the command with "
                         "--train-steps)")
    lrs = sorted({lr for _, lr in runs})
    fig, axes = plt.subplots(1, len(lrs), figsize=(11, 3.6), sharey=True, squeeze=False)
    first = next(iter(runs.values()))
    from ..config import ModelConfig

    chance = math.log(ModelConfig.preset(first["model"]).vocab_size)  # a uniform guess over the vocabulary
    for ax, lr in zip(axes[0], lrs):
        for placement, style in (("pre", "-"), ("post", "--")):
            if (placement, lr) in runs:
                loss = runs[placement, lr]["value"]
                ax.semilogy(range(1, len(loss) + 1), loss, style, label=f"{placement}-norm")
        ax.axhline(chance, color="gray", lw=0.8, ls=":", label=f"chance, ln {round(math.exp(chance))}")
        ax.set_title(f"learning rate {lr:g}", fontsize=10)
        ax.set_xlabel("AdamW step", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="lower left")
        ax.tick_params(labelsize=8)
    axes[0][0].set_ylabel("training loss (nats per token)", fontsize=9)
    fig.suptitle(f"{first['model']}, {first['n_layers']} layers, init std {first['init_std']}, no warm-up, "
                 f"one seed ({first['device']})", fontsize=10)
    fig.tight_layout()
    return fig
