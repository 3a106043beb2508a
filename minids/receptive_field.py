"""The exact reach of a sliding-window stack: which later positions can a token influence at all?

One windowed layer lets the query at position q read positions q - W + 1 .. q, so information moves at most
W - 1 positions per layer; the residual stream keeps it where it is. After L windowed layers a token at
position p can have reached p .. p + L (W - 1), and no further: beyond that every path of attention edges is
masked, so the later logits do not depend on it AT ALL (not "a little": exactly not). One full-attention
layer anywhere in the stack connects p to every later position, and the reach becomes the whole sequence.

    theoretical_reach(config)          L (W - 1) for a stack of window layers; inf with any full layer
    influence(model, ids, p)           max |change of the logits| per position after perturbing p's embedding
    influenced_positions(model, ids, p)  the positions whose logits change: exactly p .. p + L (W - 1)

The check is done in float64 with random (not small) weights: the influence at the far edge has crossed L
attention hops, each weighing it by about 1 / W, so it is small but far above float64 round-off, while
beyond the edge the change is exactly zero (a masked key's weight is exp(-inf) = 0, and 0 * v adds nothing).
The threshold (a relative 1e-10 of the largest change) sits between the two by many orders of magnitude.

Convention: W keys per query including itself (transformers'); the Mistral paper counts W + 1 and writes the
reach as L x W ("about 131K tokens" for 32 layers of W = 4096): the same band, off by one in the name of W.
"""

from __future__ import annotations

import copy
import math

import torch

from .config import ModelConfig


def theoretical_reach(config: ModelConfig) -> float:
    """How far (in positions) a token can influence later logits: n_layers * (W - 1), or inf if any layer
    attends to the whole prefix (or there is no window at all)."""
    windows = [config.layer_window(i) for i in range(config.n_layers)]
    if any(w is None for w in windows):
        return math.inf
    return sum(w - 1 for w in windows)


@torch.no_grad()
def influence(model, ids: torch.Tensor, p: int, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    """(t,) float64: for each position, the largest |change| of its logits (over batch and vocabulary) when
    the token embedding at position p is moved by a random vector of norm `scale`.

    Runs a float64 copy of the model (the model itself is not changed), with a forward hook on the embedding
    that adds the perturbation, against the same copy without it.
    """
    if ids.ndim != 2:
        raise ValueError(f"influence: ids must be (batch, seq), got shape {tuple(ids.shape)}")
    t = ids.shape[1]
    if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < t:
        raise ValueError(f"influence: p must be a position in [0, {t}), got {p!r}")
    model64 = copy.deepcopy(model).to(torch.float64).eval()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    delta = torch.randn(model64.config.d_model, generator=generator, dtype=torch.float64)
    delta = (scale * delta / delta.norm()).to(ids.device)

    def perturb(module, inputs, output):  # output: (b, t, d_model), the residual stream's start
        output = output.clone()
        output[:, p] += delta
        return output

    base = model64(ids)
    handle = model64.embed_tokens.register_forward_hook(perturb)
    try:
        moved = model64(ids)
    finally:
        handle.remove()
    return (moved - base).abs().amax(dim=(0, 2))


def influenced_positions(model, ids: torch.Tensor, p: int, rel_tol: float = 1e-10, **kw) -> list[int]:
    """The positions whose logits change when position p's embedding is perturbed (influence > rel_tol times
    the largest change). For a stack of window layers: exactly p .. min(t - 1, p + theoretical_reach).

    The limit of the check: at random weights the change that reaches the far edge of the span shrinks by
    roughly a factor W per hop, so in a deep stack (e.g. 95 layers) it falls below rel_tol and below float64
    round-off, and the set returned is then SHORTER than the true reach. Use few layers (the tests and chapter
    12 go to L = 8) or a larger rel_tol margin check, never this on a 67B-deep stack."""
    change = influence(model, ids, p, **kw)
    return (change > rel_tol * change.max()).nonzero().flatten().tolist()
