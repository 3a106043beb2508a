"""A preallocated key/value cache for incremental decoding.

When a model generates one token at a time, the keys and values of earlier tokens do not change, so they
are stored instead of recomputed. minids allocates the whole cache once:

    keys, values: n_layers tensors each of shape (batch, n_kv_heads, max_len, head_dim)
    memory = 2 (K and V) * n_layers * batch * n_kv_heads * max_len * head_dim * bytes per element

Only n_kv_heads are stored, not n_heads: this is where grouped-query attention saves memory (the 67B keeps
8 KV heads for its 64 query heads: 380 KiB per token in bf16 instead of 3,040 KiB).

`length` counts the positions already written; a forward pass over t new tokens writes positions
[length, length + t) of every layer and then advances `length` by t.
"""

from __future__ import annotations

import torch

from .config import ModelConfig


class KVCache:
    def __init__(self, config: ModelConfig, batch: int, max_len: int | None = None, device=None, dtype=torch.float32):
        max_len = config.max_seq_len if max_len is None else max_len
        if batch <= 0 or max_len <= 0:
            raise ValueError(f"KVCache: batch ({batch}) and max_len ({max_len}) must be positive")
        if max_len > config.max_seq_len:
            raise ValueError(f"KVCache: max_len ({max_len}) exceeds the model's max_seq_len ({config.max_seq_len})")
        shape = (batch, config.n_kv_heads, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.batch, self.max_len, self.length = batch, max_len, 0
        self.pad: torch.Tensor | None = None  # (batch,) left-padding per row, set by a padded prefill

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def check_room(self, new_tokens: int) -> None:
        if self.length + new_tokens > self.max_len:
            raise ValueError(
                f"KV cache overflow: it holds {self.length} of {self.max_len} positions and cannot take "
                f"{new_tokens} more; allocate a larger cache (max_len) or call reset()"
            )

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this layer's new keys/values (batch, n_kv_heads, t, head_dim); return all positions so far."""
        start, end = self.length, self.length + k.shape[2]
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def key_positions(self, layer: int, t: int) -> torch.Tensor:
        """(s,) long: the positions of the keys update(layer, ...) of t tokens returned: 0 .. length + t - 1.

        Window layers build their band mask from these (a RollingKVCache returns keys out of order)."""
        return torch.arange(self.length + t, device=self.keys[layer].device)

    def advance(self, new_tokens: int) -> None:
        self.length += new_tokens

    def reset(self) -> None:
        self.length, self.pad = 0, None

    def __repr__(self) -> str:
        k = self.keys[0]
        return (
            f"KVCache(layers={len(self.keys)}, shape={tuple(k.shape)}, dtype={k.dtype}, "
            f"length={self.length}/{self.max_len}, {self.nbytes / 2**20:.2f} MiB)"
        )
