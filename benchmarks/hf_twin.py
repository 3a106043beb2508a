"""The transformers peer of a minids model, sharing its weight tensors (no second copy of the weights).

Every benchmark compares minids with transformers' `LlamaForCausalLM` (the reference implementation for
DeepSeek LLM checkpoints) on the *same* random weights. `hf_twin(model)` builds the LlamaForCausalLM on the
meta device (free) and then assigns minids' own tensors to it under their checkpoint names, so the 7B costs
no extra memory and even the 67B (135 GB in bf16) can be run by both on one 141 GB card. Only the rotary
table (a non-persistent buffer, not a weight) is rebuilt on the weights' device.

Pass `copy=True` for a twin with its own weights (training: each optimizer must own its parameters).
"""

from __future__ import annotations

import torch


def hf_twin(model, copy: bool = False, attn_implementation: str = "sdpa"):
    """A transformers LlamaForCausalLM computing the same function as the minids `model` (same device/dtype)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    fields = {k: v for k, v in model.config.to_hf_dict().items() if k not in ("model_type", "architectures")}
    weight = model.lm_head.weight
    hf_config = LlamaConfig(**fields)
    hf_config._attn_implementation = attn_implementation
    with torch.device("meta"):
        twin = LlamaForCausalLM(hf_config)
    state = model.to_hf_state_dict()
    if copy:
        state = {k: v.detach().clone() for k, v in state.items()}
    missing, unexpected = twin.load_state_dict(state, strict=False, assign=True)
    if unexpected or [m for m in missing if "rotary" not in m]:
        raise RuntimeError(f"hf_twin: names do not match: missing {missing}, unexpected {unexpected}")
    with torch.device(weight.device):  # the rotary inv_freq buffers were left on meta: rebuild them
        twin.model.rotary_emb = type(twin.model.rotary_emb)(config=hf_config)
    twin.train(model.training)
    # generate() must always produce max_new_tokens, as minids does without eos_id: no eos, a fixed pad id.
    twin.generation_config.eos_token_id = None
    twin.generation_config.pad_token_id = 0
    leftover = [n for n, t in list(twin.named_parameters()) + list(twin.named_buffers()) if t.is_meta]
    if leftover:
        raise RuntimeError(f"hf_twin: tensors still on the meta device: {leftover}")
    return twin
