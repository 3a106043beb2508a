"""Model FLOPs utilisation (MFU) and the two ceilings of a device: peak FLOP/s and memory bandwidth.

    MFU = achieved FLOP/s / peak FLOP/s,   achieved FLOP/s = tokens/s * FLOPs per token

FLOPs per token come from the one formula in accounting.py, `matmul_flops_per_token`: 2 FLOPs per weight of
every matrix product (all layers and the lm_head) plus attention's two products with the causal halving
(token i sees i + 1 keys), times 3 for a training step (forward + backward). The peak is always a
parameter: an H200 measured about 790e12 bf16 FLOP/s (docs/references.md#h200); other cards, other
dtypes and the CPU have other peaks, and `measure_matmul_peak` measures the one in front of you.

The roofline: a kernel that does F FLOPs while moving B bytes has arithmetic intensity I = F / B and can run
no faster than min(peak, I * bandwidth). Prefill multiplies every weight by b*t tokens (I in the
thousands: compute-bound); batch-1 decode reads every weight for one token (I about 1: memory-bound).
"""

from __future__ import annotations

import time

import torch

from .accounting import count_params, kv_cache_bytes, matmul_flops_per_token
from .config import ModelConfig


def _check_positive(**values) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")


def achieved_flops(tokens_per_s: float, config: ModelConfig, seq_len: int, training: bool = False) -> float:
    """FLOP/s done by the model's matrix products at `tokens_per_s`, sequences of `seq_len` (causal)."""
    _check_positive(tokens_per_s=tokens_per_s, seq_len=seq_len)
    return tokens_per_s * matmul_flops_per_token(config, seq_len, causal=True, training=training)


def mfu(tokens_per_s: float, config: ModelConfig, seq_len: int, peak_flops: float, training: bool = False) -> float:
    """Fraction of `peak_flops` (FLOP/s of the device, e.g. 790e12 for a measured H200 in bf16) achieved.

    >>> cfg = ModelConfig.preset("deepseek-llm-7b")
    >>> round(mfu(36_900, cfg, 4096, peak_flops=790e12), 2)  # transformers' H200 prefill (references.md#h200)
    0.65
    """
    _check_positive(peak_flops=peak_flops)
    return achieved_flops(tokens_per_s, config, seq_len, training) / peak_flops


def tokens_per_s_at_mfu(target_mfu: float, config: ModelConfig, seq_len: int, peak_flops: float,
                        training: bool = False) -> float:
    """The inverse: tokens/s needed for `target_mfu` (e.g. what 70% of an H200 means for the 7B)."""
    _check_positive(target_mfu=target_mfu, peak_flops=peak_flops, seq_len=seq_len)
    return target_mfu * peak_flops / matmul_flops_per_token(config, seq_len, causal=True, training=training)


# ---- the roofline -------------------------------------------------------------------------------------
def weight_bytes(config: ModelConfig, bytes_per_param: int = 2) -> int:
    """Bytes of all weights (bf16 by default): what one decoding step must read at least once."""
    return count_params(config).total * bytes_per_param


def prefill_intensity(config: ModelConfig, batch: int, seq_len: int, bytes_per_param: int = 2) -> float:
    """FLOPs per byte of a prefill forward: b*t tokens of work per read of the weights (+ the KV written)."""
    _check_positive(batch=batch, seq_len=seq_len)
    flops = batch * seq_len * matmul_flops_per_token(config, seq_len)
    moved = weight_bytes(config, bytes_per_param) + kv_cache_bytes(config, seq_len, batch)
    return flops / moved


def decode_intensity(config: ModelConfig, batch: int, context: int, bytes_per_param: int = 2) -> float:
    """FLOPs per byte of one decoding step: `batch` new tokens, each attending to `context` cached tokens.

    Every weight is read once for the whole batch and every cached key/value once, so at batch 1 the
    intensity is about 1 FLOP per byte: far below an H200's balance point (790e12 / 4.3e12 = 184).
    """
    _check_positive(batch=batch, context=context)
    p = count_params(config)
    per_token = 2 * (p.attention + p.active_ffn + p.lm_head) + config.n_layers * 4 * config.n_heads * config.head_dim * context
    moved = weight_bytes(config, bytes_per_param) + kv_cache_bytes(config, context, batch)
    return batch * per_token / moved


def attainable_flops(intensity: float, peak_flops: float, bandwidth: float) -> float:
    """The roofline: min(peak, intensity * bandwidth), in FLOP/s (bandwidth in bytes/s)."""
    _check_positive(intensity=intensity, peak_flops=peak_flops, bandwidth=bandwidth)
    return min(peak_flops, intensity * bandwidth)


# ---- measuring the ceiling ----------------------------------------------------------------------------
def measure_matmul_peak(device="cuda", dtype: torch.dtype = torch.bfloat16, n: int | None = None,
                        repeats: int = 10) -> float:
    """FLOP/s of a large square matrix product on `device`: the practical compute ceiling for MFU.

    n defaults to 8192 on a GPU (about 1.1 TFLOP per product) and 512 on the CPU. Returns the best of
    `repeats` timed products after a warm-up (the ceiling is what the hardware *can* do).
    """
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 512)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def measure_copy_bandwidth(device="cuda", nbytes: int | None = None, repeats: int = 10) -> float:
    """Bytes/s of a device-to-device copy (each byte read once and written once, both counted).

    The second ceiling: batch-1 decoding reads every weight once per token, so it can go no faster than
    weight bytes / bandwidth. nbytes defaults to 2 GiB on a GPU (well past any cache) and 64 MiB on the CPU.
    """
    device = torch.device(device)
    nbytes = nbytes or (2**31 if device.type == "cuda" else 2**26)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        dst.copy_(src)
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * nbytes / best
