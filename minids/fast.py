"""Fast paths beside the readable model: compilation, the attention kernel, fused AdamW, a training step.

Nothing here changes the function the model computes (tests/test_fast.py checks each fast path against the
readable one); it changes how many times the activations travel through memory.

Where eager PyTorch loses time: the matrix products run close to the card's peak, but between them every
RMSNorm (float32), RoPE, SiLU(gate) * up and residual add is its own kernel that reads and writes the whole
activation tensor. Those passes are memory-bound, so on an H200 each costs as much as a small matrix
product. torch.compile (Inductor) fuses every chain of them into one kernel, and in training it also fuses
their backward and the float32 cross-entropy over the 102,400-way logits.

    compile_model(model)      regional compilation: each DecoderLayer and the final norm, in place
    sdpa_backend("cudnn")     pick the fused attention kernel (flash, cudnn, efficient, math)
    fused_adamw(params, ...)  torch.optim.AdamW with fused=True on CUDA (one kernel for all parameters)
    make_train_step(...)      forward under bf16 autocast, loss, backward, optimizer step

Training precision used here: float32 master weights, gradients and AdamW state, with the matrix products
in bf16 under torch.autocast ("bf16 autocast"): the paper's "bf16 with fp32 gradient accumulation".
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

from .recompile import allow_recompiles as _allow_recompiles
from .train import lm_loss

SDPA_BACKENDS = ("default", "flash", "cudnn", "efficient", "math")


# ---- compilation ------------------------------------------------------------------------------------
def compile_model(model: nn.Module, *, dynamic: bool = False, backend: str = "inductor",
                  mode: str | None = None) -> nn.Module:
    """Compile every DecoderLayer and the final norm of a DeepSeekLM in place; returns the same model.

    Regional compilation: the layers share their code, so torch.compile traces one layer and reuses the
    kernels for all 30 (or 95), which takes seconds instead of minutes for the whole model. The module tree
    and the state_dict names stay as they are (nn.Module.compile works in place), and the model's outer
    forward (embedding, the id checks, the KV-cache bookkeeping, lm_head) stays eager Python.
    `dynamic=False` compiles one specialised version per input shape, the fastest kernels for benchmarks.
    """
    layers = getattr(model, "layers", None)
    if layers is None or not hasattr(model, "norm"):
        raise TypeError(f"compile_model takes a DeepSeekLM (with .layers and .norm), got {type(model).__name__}")
    options = dict(dynamic=dynamic, backend=backend, mode=mode)
    _allow_recompiles(len(layers) + 8)
    for layer in layers:
        layer.compile(**options)
    model.norm.compile(**options)
    return model


def uncompile_model(model: nn.Module) -> nn.Module:
    """Undo compile_model: the readable eager modules run again (the compiled code stays cached)."""
    for module in list(model.layers) + [model.norm]:
        module._compiled_call_impl = None
    return model


def is_compiled(model: nn.Module) -> bool:
    return getattr(model.layers[0], "_compiled_call_impl", None) is not None


@contextlib.contextmanager
def sdpa_backend(name: str = "default"):
    """Run F.scaled_dot_product_attention with exactly one fused kernel ("flash", "cudnn", ...).

    "default" leaves PyTorch's choice. A named backend that cannot run the inputs raises an error instead of
    silently falling back, so a benchmark always knows which kernel it timed. With torch.compile the kernel
    is chosen when the graph is traced: trace and run under the same backend.
    """
    if name not in SDPA_BACKENDS:
        raise ValueError(f"sdpa_backend {name!r} is not one of {SDPA_BACKENDS}")
    if name == "default":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kind = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
            "math": "MATH"}[name]
    if not hasattr(SDPBackend, kind):
        raise RuntimeError(f"this torch ({torch.__version__}) has no SDPA backend {kind}")
    with sdpa_kernel([getattr(SDPBackend, kind)]):
        yield


# ---- training -------------------------------------------------------------------------------------------
def fused_adamw(params, lr: float = 4.2e-4, betas=(0.9, 0.95), weight_decay: float = 0.1,
                eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW with the paper's betas and weight decay; one fused kernel for all parameters on CUDA.

    The unfused AdamW launches several elementwise kernels per parameter tensor (hundreds per step); the
    fused one updates every tensor in one pass over parameters, gradients and both moments. On the CPU
    (and for parameters split across devices) the default multi-tensor implementation is used.
    """
    params = list(params)
    on_cuda = bool(params) and all((p["params"][0] if isinstance(p, dict) else p).is_cuda for p in params)
    kw = dict(fused=True) if on_cuda else {}
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps, **kw)


# The project's one loss (float32 cross-entropy over every position) lives in train.py.
next_token_loss = lm_loss


def compiled_loss(backend: str = "inductor") -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """next_token_loss under torch.compile: the float32 upcast, log-softmax and its backward are fused, so the
    (b*t, 102400) float32 logits are never written to memory (at b*t = 16384 they would take 6.7 GB)."""
    return torch.compile(next_token_loss, dynamic=False, backend=backend)


def make_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, *, loss_fn: Callable | None = None,
                    autocast_dtype: torch.dtype | None = torch.bfloat16,
                    clip_norm: float | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """step(ids, targets) -> loss: forward (bf16 autocast), loss, backward, optional clipping, AdamW step.

    Works for a minids DeepSeekLM (compiled or not) and for any module whose output is logits or has
    `.logits` (transformers' LlamaForCausalLM), so both are timed with the same step. `loss_fn` defaults to
    `next_token_loss`; pass `compiled_loss()` for the fused one.
    """
    loss_fn = loss_fn or next_token_loss
    device_type = next(model.parameters()).device.type

    def step(ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            out = model(ids)
            logits = getattr(out, "logits", out)
            loss = loss_fn(logits, targets)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step
