"""Chapter 13's LoRA figures: the decomposition W0 + (alpha/r) B A drawn to scale with its singular values, and
LoRA against full fine-tuning with frozen layers on the miniature."""

from __future__ import annotations

import torch

__all__ = ["decomposition_figure", "finetune_comparison_figure"]


def _singular_values(ax, W0: torch.Tensor, dW: torch.Tensor, r: int, w0_label: str, dw_label: str, title: str):
    ax.semilogy(torch.linalg.svdvals(W0.detach().float()), "o", ms=3, label=w0_label)
    ax.semilogy(torch.linalg.svdvals(dW.detach().float()), "s", ms=3, label=dw_label)
    ax.axvline(r - 0.5, color="gray", lw=0.8, label=f"index r = {r}")
    ax.set_xlabel("index i (largest first)", fontsize=9)
    ax.set_ylabel("singular value σ_i (same units as the weights)", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=8)


def decomposition_figure(W0: torch.Tensor, dW: torch.Tensor, r: int, d_real: int = 4096, r_drawn: int = 600):
    """Left: one d_real x d_real projection with its rank-r adapter (r drawn r_drawn wide, or A and B would be
    invisible). Right: the singular values of a small W0 and of its change (alpha/r) B A."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.5, 1]})
    s = 3.0 / d_real  # drawing units per row or column
    parts = [(0.0, d_real, d_real, "lightgray", f"$W_0$\n{d_real:,} x {d_real:,}\n{d_real**2:,} numbers\nfrozen"),
             (4.4, d_real, r_drawn, "C1", f"$B$\n{d_real:,}\nx {r}"),
             (5.2, r_drawn, d_real, "C0", f"$A$: {r} x {d_real:,}")]
    for x0, rows, cols, colour, label in parts:
        left.add_patch(Rectangle((x0, 3.0 - rows * s), cols * s, rows * s, facecolor=colour, edgecolor="black",
                                 alpha=0.6))
        left.text(x0 + cols * s / 2, 3.0 - rows * s / 2, label, ha="center", va="center", fontsize=9)
    left.text(3.7, 1.5, r"$+\ \frac{\alpha}{r}$", fontsize=14, ha="center", va="center")
    left.text(1.5, -0.45, f"$W = W_0 + \\frac{{\\alpha}}{{r}} BA$: {2 * r * d_real:,} numbers trained "
              f"({2 * r * d_real / d_real**2:.2%}), B starts at 0", ha="left", fontsize=9)
    left.set(xlim=(-0.2, 8.6), ylim=(-0.7, 3.2), aspect="equal")
    left.set_title(f"one {d_real:,} x {d_real:,} projection at r = {r} (r drawn {r_drawn // r}x too wide)",
                   fontsize=10)
    left.axis("off")
    n = W0.shape[0]
    _singular_values(right, W0, dW, r, f"$W_0$ ({n} x {W0.shape[1]}, random init)", f"(α/r) BA, r = {r}",
                     f"rank: all {min(W0.shape)} against exactly {r}")
    fig.tight_layout()
    return fig


def finetune_comparison_figure(lora_losses: list[float], full_losses: list[float], n_lora: int, n_full: int,
                               W0: torch.Tensor, dW: torch.Tensor, r: int = 8):
    """Left: the loss of LoRA and of full fine-tuning (frozen lower layers) per step. Right: the singular values
    of a pre-trained W0 and of the LoRA change trained beside it."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    left.plot(range(1, len(lora_losses) + 1), lora_losses, "o-", label=f"LoRA r = {r}, all 7 ({n_lora:,} trained)")
    left.plot(range(1, len(full_losses) + 1), full_losses, "s-",
              label=f"full, lower layers + embedding frozen ({n_full:,})")
    left.set_yscale("log")
    left.set_xlabel("AdamW step", fontsize=9)
    left.set_ylabel("loss on the answers (nats per token)", fontsize=9)
    left.set_title(f"{len(lora_losses)} steps on the same examples", fontsize=10)
    left.tick_params(labelsize=8)
    left.legend(fontsize=8)
    _singular_values(right, W0, dW, r, "$W_0$: pre-trained q_proj, layer 0", f"(α/r) BA after {len(lora_losses)} steps",
                     f"the miniature's q_proj ({W0.shape[0]} x {W0.shape[1]}), layer 0")
    fig.tight_layout()
    return fig
