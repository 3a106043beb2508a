"""ByteTokenizer: text <-> UTF-8 bytes, one token per byte (vocab_size 256).

DeepSeek LLM uses a byte-level BPE of 100,000 merges (docs/references.md#tokenizer); its base alphabet is these same 256
bytes. Without the merges every character of English is one token, so sequences are longer, but the
tokenizer has nothing to train, cannot meet an unknown character, and is the same on every machine.
"""

from __future__ import annotations

from typing import Iterable

import torch


class ByteTokenizer:
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"ByteTokenizer.encode takes a str, got {type(text).__name__}")
        return list(text.encode("utf-8"))

    def encode_tensor(self, text: str) -> torch.Tensor:
        """The ids as a 1-d torch.long tensor."""
        return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """Bytes back to text; a cut-off multi-byte character becomes U+FFFD instead of an error."""
        if isinstance(ids, torch.Tensor):
            ids = ids.flatten().tolist()
        ids = list(ids)
        bad = [i for i in ids if not 0 <= int(i) < 256]
        if bad:
            raise ValueError(f"ByteTokenizer.decode: ids must lie in [0, 256), got {bad[:5]}")
        return bytes(ids).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=256)"
