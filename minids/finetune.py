"""Full fine-tuning: the pre-trained weights trained further by the same loop, some of them frozen.

Full fine-tuning is pre-training continued on other data, so minids does it with `train.train` as it is;
two things differ, and both are choices made outside the loop:

    a lower learning rate   the weights already hold what pre-training learned, and a pre-training-sized step
                            moves them far from it in the first hundred steps (catastrophic forgetting); a
                            tenth of the pre-training peak is the usual starting point (FINETUNE_LR_SCALE)
    frozen parts            `freeze(model, layers=..., embeddings=...)` sets requires_grad = False, and
                            train.make_optimizer hands AdamW only the trainable weights: a frozen weight
                            gets no update and no weight decay, so it stays exactly as it was

Freezing the lower layers and the embedding keeps the general features and trains only the top, which
is cheaper and forgets less; LoRA (lora.py) goes further and trains a low-rank change of chosen matrices.
`trainable_params` counts what an optimizer would train, for either kind of model.
"""

from __future__ import annotations

from typing import Iterable

from torch import nn

FINETUNE_LR_SCALE = 0.1  # full fine-tuning's peak learning rate as a fraction of pre-training's


def trainable_params(model: nn.Module) -> int:
    """Parameters with requires_grad (what the optimizer trains): all of them for a fresh model, the LoRA
    matrices for a peft model, the rest for a partly frozen one."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def freeze(
    model: nn.Module,
    layers: Iterable[int] | None = None,
    embeddings: bool = False,
    lm_head: bool = False,
    final_norm: bool = False,
) -> nn.Module:
    """Freeze parts of a DeepSeekLM in place (requires_grad = False); returns the model.

    layers: decoder layer indices to freeze (negative indices count from the top, as in Python);
    embeddings: embed_tokens; lm_head; final_norm: the last RMSNorm. What is not named keeps its setting,
    so freeze(model, layers=range(4), embeddings=True) trains the top layers, the final norm and lm_head.
    `unfreeze(model)` makes everything trainable again.
    """
    from .model import DeepSeekLM

    if not isinstance(model, DeepSeekLM):
        raise TypeError(f"freeze takes a DeepSeekLM, got {type(model).__name__} (freeze before apply_lora, "
                        "which freezes all base weights itself)")
    n = model.config.n_layers
    chosen = []
    for i in (layers or ()):
        if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
            raise ValueError(f"freeze: layer index {i!r} is not an int in [-{n}, {n}) (the model has {n} layers)")
        chosen.append(i % n)
    parts: list[nn.Module] = [model.layers[i] for i in chosen]
    parts += [m for flag, m in ((embeddings, model.embed_tokens), (lm_head, model.lm_head),
                                (final_norm, model.norm)) if flag]
    for part in parts:
        for p in part.parameters():
            p.requires_grad_(False)
    return model


def unfreeze(model: nn.Module) -> nn.Module:
    """Make every parameter trainable again."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def frozen_names(model: nn.Module) -> list[str]:
    """Names of the parameters that will not train."""
    return [name for name, p in model.named_parameters() if not p.requires_grad]

