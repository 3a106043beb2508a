"""The KV cache of multi-head latent attention: per layer, the latent c_KV and the shared RoPE key k_R only.

    latents:   n_layers tensors of shape (batch, max_len, d_c)     (d_c = kv_lora_rank = 512 in V2/V3)
    rope_keys: n_layers tensors of shape (batch, max_len, d_h^R)   (64: one RoPE key shared by every head)
    memory = n_layers * batch * max_len * (d_c + d_h^R) * bytes per element

No per-head key or value is ever stored: MultiHeadLatentAttention rebuilds them (decompressed path) or never
forms them (absorbed path). For V3, 61 x 576 x 2 = 70,272 bytes per token in bf16, against 380 KiB for
DeepSeek LLM 67B's GQA cache. The interface is KVCache's (length, advance, check_room, reset, pad).
"""

from __future__ import annotations

import torch

from .config import ModelConfig
from .kv_cache import KVCache


class LatentKVCache(KVCache):
    def __init__(self, config: ModelConfig, batch: int, max_len: int | None = None, device=None,
                 dtype=torch.float32):
        if not config.is_mla:
            raise ValueError("LatentKVCache is for multi-head latent attention (kv_lora_rank set); use KVCache")
        max_len = config.max_seq_len if max_len is None else max_len
        if batch <= 0 or max_len <= 0:
            raise ValueError(f"LatentKVCache: batch ({batch}) and max_len ({max_len}) must be positive")
        if max_len > config.max_seq_len:
            raise ValueError(f"LatentKVCache: max_len ({max_len}) exceeds the model's max_seq_len "
                             f"({config.max_seq_len})")
        kw = dict(device=device, dtype=dtype)
        self.latents = [torch.zeros(batch, max_len, config.kv_lora_rank, **kw) for _ in range(config.n_layers)]
        self.rope_keys = [torch.zeros(batch, max_len, config.qk_rope_head_dim, **kw) for _ in range(config.n_layers)]
        self.batch, self.max_len, self.length = batch, max_len, 0
        self.pad: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.latents + self.rope_keys)

    def update(self, layer: int, c_kv: torch.Tensor, k_r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this layer's new latents (b, t, d_c) and RoPE keys (b, t, d_h^R); return all positions so far."""
        start, end = self.length, self.length + c_kv.shape[1]
        self.latents[layer][:, start:end] = c_kv
        self.rope_keys[layer][:, start:end] = k_r
        return self.latents[layer][:, :end], self.rope_keys[layer][:, :end]

    def key_positions(self, layer: int, t: int) -> torch.Tensor:
        return torch.arange(self.length + t, device=self.latents[layer].device)

    def __repr__(self) -> str:
        c, r = self.latents[0], self.rope_keys[0]
        return (f"LatentKVCache({len(self.latents)} layers, c_KV {tuple(c.shape)} + k_R {tuple(r.shape)}, "
                f"{str(c.dtype).replace('torch.', '')}, length {self.length}/{self.max_len}, "
                f"{self.nbytes / 2**20:.2f} MiB)")
