"""A rolling-buffer KV cache for sliding-window models: memory bounded by the window, whatever the length.

A layer with window W never looks further back than W - 1 positions, so it only ever needs the keys and
values of the last W positions. The rolling buffer (Mistral 7B, arXiv 2310.06825, section 2) stores the
key/value of position i in slot i mod W: position W overwrites position 0, W + 1 overwrites 1, and so on.

    window layer:  keys (b, k, W, d)        slot i mod W holds the latest position i written there
    full layer:    keys (b, k, max_len, d)  a full layer of a mixed model keeps every position (never wraps)
    memory = 2 * sum over layers of min(capacity, ...) * b * k * d * bytes: for the 67B with W = 4096
             everywhere, 1.48 GiB per sequence at 128K tokens instead of 47.5 GiB (accounting.kv_cache_bytes)

The slots are not in position order once the buffer has wrapped, and attention does not need them to be:
softmax over keys does not care about their order, only about which keys each query may see. So every layer
keeps the position held by each slot (`positions`, -1 for an empty slot), and attention builds its band mask
from those positions (attention.band_mask).

Writing t new positions into a layer that already holds some:
    t == 1 (decoding)      write first, then attend over the W slots: after writing position p, the buffer
                           holds exactly p - W + 1 .. p, the window of the new query.
    no wrap yet            write first, then attend over slots 0 .. length + t - 1 (positions in order).
    otherwise (a chunk)    attend over [buffer, new keys] (W + t keys), then write the last min(t, W) new
                           ones: writing first would overwrite keys the chunk's first queries still need.
So a prompt can be prefilled in chunks of any size, a chunk longer than W too (Mistral prefills chunks of W:
`prefill`), and the peak extra memory is one chunk's keys.
"""

from __future__ import annotations

import torch

from .config import ModelConfig


class RollingKVCache:
    """Per layer, a ring buffer of min(window, max_len) positions (max_len for full-attention layers).

    The interface of KVCache (batch, length, pad, update, advance, reset, check_room, nbytes), plus
    key_positions(layer, t): the position of each key that the last update(layer, ...) returned.
    """

    def __init__(self, config: ModelConfig, batch: int, max_len: int | None = None, device=None,
                 dtype=torch.float32):
        if not config.windowed:
            raise ValueError(
                "RollingKVCache is for models with sliding-window layers (config.sliding_window); this config "
                "attends to every position in every layer: use KVCache"
            )
        max_len = config.max_seq_len if max_len is None else max_len
        if batch <= 0 or max_len <= 0:
            raise ValueError(f"RollingKVCache: batch ({batch}) and max_len ({max_len}) must be positive")
        if max_len > config.max_seq_len:
            raise ValueError(
                f"RollingKVCache: max_len ({max_len}) exceeds the model's max_seq_len ({config.max_seq_len})")
        windows = [config.layer_window(i) for i in range(config.n_layers)]
        # A window layer needs W slots; a full layer all max_len (and then never wraps).
        self.capacity = [max_len if w is None else min(w, max_len) for w in windows]
        self.keys, self.values, self.positions = [], [], []
        for cap in self.capacity:
            shape = (batch, config.n_kv_heads, cap, config.head_dim)
            self.keys.append(torch.zeros(shape, device=device, dtype=dtype))
            self.values.append(torch.zeros(shape, device=device, dtype=dtype))
            self.positions.append(torch.full((cap,), -1, dtype=torch.long, device=device))
        # max_len bounds the positions only where some layer keeps them all; windowed-only never fills up.
        self.full_layers = any(w is None for w in windows)
        self.batch, self.max_len, self.length = batch, max_len, 0
        self.pad: torch.Tensor | None = None  # (batch,) left-padding per row, set by a padded prefill
        self._returned: list[torch.Tensor | None] = [None] * config.n_layers

    @property
    def nbytes(self) -> int:
        """Bytes of the keys and values (the positions, 8 bytes per slot per layer, are not counted)."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def check_room(self, new_tokens: int) -> None:
        if self.full_layers and self.length + new_tokens > self.max_len:
            raise ValueError(
                f"KV cache overflow: its full-attention layers hold {self.length} of {self.max_len} positions "
                f"and cannot take {new_tokens} more; allocate a larger cache (max_len) or call reset()"
            )

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this layer's new keys/values (b, k, t, d); return the keys/values the new queries attend over.

        The returned keys are not necessarily in position order; key_positions(layer, t) says where each is.
        """
        cap, t = self.capacity[layer], k.shape[2]
        start, end = self.length, self.length + t
        new_pos = torch.arange(start, end, device=k.device)
        keys, values, pos = self.keys[layer], self.values[layer], self.positions[layer]
        if end <= cap:  # not wrapped yet: slots 0 .. end - 1 hold positions 0 .. end - 1
            keys[:, :, start:end], values[:, :, start:end], pos[start:end] = k, v, new_pos
            self._returned[layer] = pos[:end]
            return keys[:, :, :end], values[:, :, :end]
        if t == 1:  # decoding: the buffer after the write is exactly the new query's window
            slot = start % cap
            keys[:, :, slot : slot + 1], values[:, :, slot : slot + 1], pos[slot] = k, v, start
            self._returned[layer] = pos
            return keys, values
        # A chunk: the queries need the old keys, so attend over old + new, then keep the last cap positions.
        all_k, all_v = torch.cat([keys, k], dim=2), torch.cat([values, v], dim=2)
        self._returned[layer] = torch.cat([pos, new_pos])  # a copy: pos changes below
        keep = min(t, cap)
        slots = new_pos[-keep:] % cap
        keys.index_copy_(2, slots, k[:, :, -keep:])
        values.index_copy_(2, slots, v[:, :, -keep:])
        pos.index_copy_(0, slots, new_pos[-keep:])
        return all_k, all_v

    def key_positions(self, layer: int, t: int) -> torch.Tensor:
        """(s,) long: the position of each key the last update(layer, ...) of t tokens returned (-1: empty)."""
        returned = self._returned[layer]
        if returned is None:
            raise RuntimeError(f"RollingKVCache.key_positions: layer {layer} has not been updated yet")
        return returned

    def advance(self, new_tokens: int) -> None:
        self.length += new_tokens

    def reset(self) -> None:
        self.length, self.pad = 0, None
        for pos in self.positions:
            pos.fill_(-1)
        self._returned = [None] * len(self._returned)

    def __repr__(self) -> str:
        caps = sorted(set(self.capacity))
        return (f"RollingKVCache(layers={len(self.keys)}, slots per layer={caps}, dtype={self.keys[0].dtype}, "
                f"length={self.length}, {self.nbytes / 2**20:.2f} MiB)")


@torch.no_grad()
def prefill(model, ids: torch.Tensor, cache, chunk: int | None = None) -> torch.Tensor:
    """Run a prompt (b, t) into `cache` in chunks of `chunk` positions (default: the model's window, as
    Mistral does); returns the logits of the last position, (b, 1, vocab). The same logits as one pass."""
    t = ids.shape[1]
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"prefill: chunk must be >= 1 (an int; None means the model's window), got {chunk!r}")
    chunk = chunk or model.config.sliding_window or t
    logits = None
    for a in range(0, t, chunk):
        logits = model(ids[:, a : a + chunk], cache, last_only=True)
    return logits
