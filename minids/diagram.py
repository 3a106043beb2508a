"""you_are_here: the course's one recurring figure, the DeepSeek decoder stack with the piece a chapter teaches
highlighted and that piece's size in the real 7B and 67B written beside it.

    from minids.diagram import you_are_here
    you_are_here("attention")

The stack is drawn bottom (tokens in) to top (logits out), as the residual stream flows:

    token embedding -> n_layers x [RMSNorm, attention with RoPE, residual add, RMSNorm, FFN, residual add]
    -> final RMSNorm -> lm_head

Every number beside the stack is computed from the presets (`ModelConfig.preset`) and `count_params` /
`kv_cache_bytes`, never typed in, so the figure agrees with the chapters' own printed numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from .accounting import count_params, kv_cache_bytes
from .config import ModelConfig

__all__ = ["PIECES", "you_are_here", "piece_facts"]

# The pieces a chapter can point at; each names the boxes it lights up (see _BOXES).
PIECES = {
    "embedding": ("embed",),
    "rmsnorm": ("norm1", "norm2", "final_norm"),
    "attention": ("attn",),
    "rope": ("attn",),
    "kv_cache": ("attn",),
    "window": ("attn",),
    "residual": ("add1", "add2"),
    "ffn": ("ffn",),
    "moe": ("ffn",),
    "decoder_layer": ("norm1", "attn", "add1", "norm2", "ffn", "add2"),
    "final_norm": ("final_norm",),
    "lm_head": ("lm_head",),
}

# Boxes bottom to top: key, label, whether it sits inside the repeated decoder layer.
_BOXES = [
    ("embed", "token embedding", False),
    ("norm1", "RMSNorm", True),
    ("attn", "attention (RoPE on q, k)", True),
    ("add1", "+ residual", True),
    ("norm2", "RMSNorm", True),
    ("ffn", "FFN (SwiGLU)", True),
    ("add2", "+ residual", True),
    ("final_norm", "final RMSNorm", False),
    ("lm_head", "lm_head", False),
]
# What a piece changes in the label of its box (the box is the same place in the stack).
_RELABEL = {
    "rope": {"attn": "attention: RoPE rotates q, k"},
    "kv_cache": {"attn": "attention + KV cache"},
    "window": {"attn": "attention, sliding window W"},
    "moe": {"ffn": "FFN -> MoE (shared + routed experts)"},
}


@dataclass(frozen=True)
class _Sizes:
    name: str
    config: ModelConfig


def _fmt(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n:,}"


def piece_facts(piece: str, config: ModelConfig) -> list[str]:
    """The lines written beside the stack for one model: its shape, then the highlighted piece's size in it."""
    c, p = config, count_params(config)
    shape = (f"{c.n_layers} layers, d_model {c.d_model}, {c.n_heads} q / {c.n_kv_heads} kv heads, "
             f"d_ff {c.d_ff}")
    per_layer_attn, per_layer_ffn = p.attention // c.n_layers, p.ffn // c.n_layers
    facts = {
        "embedding": f"embedding {c.vocab_size:,} x {c.d_model} = {_fmt(p.embedding)} parameters",
        "rmsnorm": f"RMSNorm: {c.d_model:,} gains each, 2 per layer + 1 = {2 * c.n_layers + 1} norms",
        "attention": f"attention {_fmt(per_layer_attn)} per layer, {_fmt(p.attention)} in all",
        "rope": f"RoPE: no parameters; head_dim {c.head_dim} = {c.head_dim // 2} rotating pairs, theta {c.rope_theta:g}",
        "kv_cache": f"KV cache {kv_cache_bytes(c, seq_len=1) // 1024:,} KiB per token in bf16",
        "window": f"full attention: each layer sees all {c.max_seq_len:,} positions (no window)",
        "residual": f"residual stream: {c.d_model:,} numbers per token, {2 * c.n_layers} adds",
        "ffn": f"FFN {_fmt(per_layer_ffn)} per layer ({per_layer_ffn / (per_layer_ffn + per_layer_attn):.0%} of it)",
        "moe": f"dense FFN {_fmt(per_layer_ffn)} per layer (DeepSeekMoE splits it into experts)",
        "decoder_layer": f"one layer {_fmt(p.per_layer)} parameters, x {c.n_layers} = {_fmt(p.per_layer * c.n_layers)}",
        "final_norm": f"final RMSNorm: {c.d_model:,} gains",
        "lm_head": f"lm_head {c.d_model} x {c.vocab_size:,} = {_fmt(p.lm_head)} (untied)",
    }
    return [shape, facts[piece]]


def you_are_here(piece: str, show: bool = True):
    """Draw the decoder stack with `piece` highlighted and the 7B / 67B sizes beside it.

    `piece` is one of PIECES: embedding, rmsnorm, attention, rope, kv_cache, window, residual, ffn, moe,
    decoder_layer, final_norm, lm_head. In a notebook, show=True displays the figure once, closes it and
    returns None (a returned Figure would be displayed a second time as the cell's value); with show=False, or
    outside a notebook, the Figure is returned to draw on or save.
    """
    if piece not in PIECES:
        raise ValueError(f"you_are_here: unknown piece {piece!r}; choose one of {', '.join(PIECES)}")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    lit = set(PIECES[piece])
    labels = {k: lab for k, lab, _ in _BOXES} | _RELABEL.get(piece, {})
    fig, ax = plt.subplots(figsize=(9.5, 5.2))
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.6, len(_BOXES) + 0.9)
    ax.axis("off")

    box_w, x0 = 3.6, 0.5
    for row, (key, _, in_layer) in enumerate(_BOXES):
        on = key in lit
        ax.add_patch(FancyBboxPatch((x0, row + 0.12), box_w, 0.72, boxstyle="round,pad=0.02,rounding_size=0.12",
                                    facecolor="#f4a259" if on else ("#dfe9f5" if in_layer else "#eeeeee"),
                                    edgecolor="#b5541c" if on else "#7a8ca3", linewidth=2.0 if on else 1.0))
        ax.text(x0 + box_w / 2, row + 0.48, labels[key], ha="center", va="center", fontsize=10,
                fontweight="bold" if on else "normal")
        if row + 1 < len(_BOXES):  # the residual stream flows up
            ax.annotate("", xy=(x0 + box_w / 2, row + 1.12), xytext=(x0 + box_w / 2, row + 0.84),
                        arrowprops=dict(arrowstyle="->", color="#555555", lw=1))

    # The skip paths: each sub-layer's input goes around it to the residual add.
    rows = {key: i for i, (key, _, _) in enumerate(_BOXES)}
    xs = x0 + box_w + 0.18
    for start, add in (("norm1", "add1"), ("norm2", "add2")):
        y0, y1 = rows[start] - 0.05, rows[add] + 0.48
        ax.plot([x0 + box_w / 2 + 0.35, xs, xs], [y0, y0, y1], color="#7a8ca3", lw=1.2)
        ax.annotate("", xy=(x0 + box_w, y1), xytext=(xs, y1), arrowprops=dict(arrowstyle="->", color="#7a8ca3"))

    # The bracket that says these six boxes repeat n_layers times.
    first = next(i for i, b in enumerate(_BOXES) if b[2])
    last = max(i for i, b in enumerate(_BOXES) if b[2])
    xb = x0 - 0.2
    ax.plot([xb, xb], [first + 0.1, last + 0.86], color="#7a8ca3", lw=1.5)
    ax.text(xb - 0.12, (first + last + 1) / 2, "x n_layers\n(30 | 95)", rotation=90, ha="right", va="center",
            fontsize=9, color="#44546a")
    ax.text(x0 + box_w / 2, -0.4, "tokens in", ha="center", fontsize=9, color="#555555")
    ax.text(x0 + box_w / 2, len(_BOXES) + 0.05, "logits out", ha="center", fontsize=9, color="#555555")

    # The sizes beside the stack, for the two models of the paper.
    y = len(_BOXES) - 0.4
    ax.text(4.7, y + 0.5, f"you are here: {piece.replace('_', ' ')}", fontsize=12, fontweight="bold",
            color="#b5541c")
    for model in (_Sizes("DeepSeek LLM 7B", ModelConfig.preset("deepseek-llm-7b")),
                  _Sizes("DeepSeek LLM 67B", ModelConfig.preset("deepseek-llm-67b"))):
        shape, fact = piece_facts(piece, model.config)
        ax.text(4.7, y - 0.3, model.name, fontsize=10.5, fontweight="bold")
        ax.text(4.7, y - 0.85, shape, fontsize=8.5, color="#333333")
        ax.text(4.7, y - 1.4, fact, fontsize=9.5, color="#b5541c" if fact else "#333333", wrap=True)
        y -= 2.3
    fig.tight_layout()
    if show:
        try:
            from IPython import get_ipython
            from IPython.display import display

            if get_ipython() is not None:
                display(fig)
                plt.close(fig)
                return None
        except ImportError:
            pass
    return fig
