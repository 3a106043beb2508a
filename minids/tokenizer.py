"""Tokenizer: DeepSeek LLM's tokenizer design, through Hugging Face `tokenizers` (no BPE written by hand).

The paper (section 2.1): byte-level BPE, as GPT-2 introduced it, so that any UTF-8 text has an encoding and
nothing is "unknown"; pre-tokenization that keeps characters of different categories (letters, digits,
punctuation, new lines, CJK) from merging into one token; numbers split into single digits, as Llama does;
100,000 BPE tokens plus special tokens (100,015 in all), with the model's vocabulary padded to 102,400 for
efficient matrix shapes. This module does the same at any size:

    Tokenizer.from_file(path)       a tokenizer.json (the real DeepSeek LLM checkpoint's loads the same way)
    Tokenizer.from_dir(folder)      the tokenizer.json of a checkpoint folder
    train_tokenizer(texts, n)       a DeepSeek-style byte-level BPE trained on our own text
    tok.encode(text) / tok.decode(ids) / tok.encode_batch(texts, pad_to=...)

`tokenizers` does the work (its Rust BPE is what transformers' fast tokenizers run); this wrapper only
names the pieces, adds the begin/end-of-sentence tokens and returns plain lists and tensors.
"""

from __future__ import annotations

import json
import numbers
import os
from pathlib import Path
from typing import Iterable

import torch

# DeepSeek LLM's own special tokens (its tokenizer_config.json); the "｜" and "▁" are full-width characters.
BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD_MULTIPLE = 128  # the paper pads 100,015 tokens to 102,400 = 800 x 128


class Tokenizer:
    """A tokenizer.json, with DeepSeek's bos/eos conventions."""

    def __init__(self, backend, bos: str | None = BOS, eos: str | None = EOS) -> None:
        from tokenizers import Tokenizer as Backend

        if not isinstance(backend, Backend):
            raise TypeError(f"Tokenizer wraps a tokenizers.Tokenizer, got {type(backend).__name__}")
        self.backend = backend
        self.bos_id = backend.token_to_id(bos) if bos else None
        self.eos_id = backend.token_to_id(eos) if eos else None

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kw) -> "Tokenizer":
        from tokenizers import Tokenizer as Backend

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {path} (expected a Hugging Face tokenizer.json)")
        from .files import read_json

        read_json(path, expect=dict, what="tokenizer.json")  # an empty or cut-short file is named as such
        try:
            backend = Backend.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception with serde's message and no path
            raise ValueError(f"{path} is JSON but not a tokenizer.json that `tokenizers` can read: {exc}") from None
        return cls(backend, **kw)

    @classmethod
    def from_dir(cls, folder: str | os.PathLike, **kw) -> "Tokenizer":
        """The tokenizer.json of a checkpoint folder (a Hugging Face model folder, ours or DeepSeek's)."""
        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{folder} holds no tokenizer.json (a fast-tokenizer file is needed)")
        return cls.from_file(path, **kw)

    @property
    def vocab_size(self) -> int:
        """Tokens the file defines, special tokens included (DeepSeek LLM: 100,015)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def padded_vocab_size(self, multiple: int = PAD_MULTIPLE) -> int:
        """The model's vocabulary: vocab_size rounded up to a multiple (DeepSeek LLM: 102,400)."""
        return -(-self.vocab_size // multiple) * multiple

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"Tokenizer.encode takes a str, got {type(text).__name__}")
        ids = self.backend.encode(text, add_special_tokens=False).ids
        return self._wrap(ids, bos, eos)

    def _wrap(self, ids: list[int], bos: bool, eos: bool) -> list[int]:
        for flag, tid, name in ((bos, self.bos_id, "bos"), (eos, self.eos_id, "eos")):
            if flag and tid is None:
                raise ValueError(f"this tokenizer has no {name} token")
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: Iterable[int] | torch.Tensor, skip_special: bool = True) -> str:
        ids = self._check_ids(ids)
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"Tokenizer.decode: ids must lie in [0, {self.vocab_size}), got {bad[:5]}")
        return self.backend.decode(ids, skip_special_tokens=skip_special)

    @staticmethod
    def _check_ids(ids) -> list[int]:
        """decode's ids as a list of ints: a tensor or sequence of integers; a float, a string or a lone int is
        refused (int() would truncate 3.7 to 3 and read "12" as token 12; transformers' decode takes a list)."""
        if isinstance(ids, torch.Tensor):
            if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
                raise TypeError(f"Tokenizer.decode: ids must be an integer tensor, got dtype {ids.dtype}")
            return ids.flatten().tolist()
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            hint = " (for one token, pass [id])" if isinstance(ids, int) else ""
            raise TypeError(f"Tokenizer.decode takes a list (or tensor) of token ids, got {type(ids).__name__} "
                            f"{ids!r:.40}{hint}")
        ids = list(ids)
        bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, numbers.Integral)]
        if bad:
            raise TypeError(f"Tokenizer.decode: every id must be an int, got {bad[:3]!r} "
                            f"({type(bad[0]).__name__})")
        return [int(i) for i in ids]  # numpy integers too

    def encode_batch(self, texts: list[str], bos: bool = False, eos: bool = False, pad_id: int | None = None,
                     left_pad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, attention_mask), each (batch, longest): padded with pad_id (default: eos) on the right, or on
        the left (left_pad, as batched generation wants). `texts` is a list of strings (a lone string is refused:
        it would be encoded one character per row); pad_id must be a token id of this tokenizer."""
        if isinstance(texts, str) or not isinstance(texts, Iterable):
            raise TypeError(f"Tokenizer.encode_batch takes a list of strings, got {type(texts).__name__}"
                            + (" (for one text, pass [text], or use encode)" if isinstance(texts, str) else ""))
        texts = list(texts)
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise TypeError(f"Tokenizer.encode_batch: every text must be a str, got {type(bad[0]).__name__}")
        rows = [self._wrap(e.ids, bos, eos) for e in self.backend.encode_batch(texts, add_special_tokens=False)]
        pad = self.eos_id if pad_id is None else pad_id
        if pad is None:
            raise ValueError("encode_batch needs a pad_id: this tokenizer has no eos token to pad with")
        if isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < self.vocab_size:
            raise ValueError(f"encode_batch: pad_id must be a token id, an int in [0, {self.vocab_size}), "
                             f"got {pad!r}")
        width = max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            cols = slice(width - len(r), width) if left_pad else slice(0, len(r))
            ids[i, cols] = torch.tensor(r, dtype=torch.long)
            mask[i, cols] = 1
        return ids, mask

    def tokens(self, text: str) -> list[str]:
        """How the text is cut: each token's text (bytes shown as GPT-2's printable stand-ins)."""
        return self.backend.encode(text, add_special_tokens=False).tokens

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        """Write tokenizer.json atomically (a temp file, then a rename). Replaces only a tokenizer file (JSON
        with a "model" entry, as `tokenizers` writes it): a folder, or any other file, is refused unless
        overwrite=True, so that a wrong path never costs a notebook, a checkpoint or a results file."""
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"Tokenizer.save: {path} is a folder; give a file path, such as "
                                    f"{path / 'tokenizer.json'}")
        if path.is_file() and not overwrite:
            try:
                is_tokenizer = "model" in json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError, TypeError):
                is_tokenizer = False
            if not is_tokenizer:
                raise FileExistsError(f"Tokenizer.save: {path} exists and is not a tokenizer file, so replacing it "
                                      "would lose it; choose another path, or pass overwrite=True")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        self.backend.save(str(tmp))
        os.replace(tmp, path)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size:,}, bos={self.bos_id}, eos={self.eos_id})"


def train_tokenizer(texts: Iterable[str], n_bpe: int = 8000, specials: tuple[str, ...] = (BOS, EOS),
                    pad_multiple: int = PAD_MULTIPLE, split_digits: bool = True) -> Tokenizer:
    """A DeepSeek-style byte-level BPE trained on `texts`: n_bpe tokens (the 256 bytes included) learned by
    `tokenizers`' BpeTrainer, then the special tokens, then reserved tokens up to a multiple of pad_multiple
    (so that the tokenizer's size is the model's vocabulary, as 102,400 is the 67B's).

    Pre-tokenization, in order: digits split one by one (the paper's "numbers split into individual digits"),
    then GPT-2's byte-level split (letters, digits, punctuation and white space never share a token), with
    every byte mapped to a printable stand-in so that any UTF-8 text round-trips exactly.
    split_digits=False leaves numbers to BPE (for comparison: frequent numbers become single tokens).
    """
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if n_bpe < 257:
        raise ValueError(f"n_bpe ({n_bpe}) must exceed the 256 byte tokens that byte-level BPE starts from")
    backend = Backend(models.BPE())
    steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if split_digits:
        steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    backend.pre_tokenizer = pre_tokenizers.Sequence(steps)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=n_bpe, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=[])
    backend.train_from_iterator(texts, trainer=trainer)
    backend.add_special_tokens(list(specials))
    size = backend.get_vocab_size(with_added_tokens=True)
    padded = -(-size // pad_multiple) * pad_multiple
    backend.add_special_tokens([f"<｜reserved_{i}｜>" for i in range(padded - size)])
    return Tokenizer(backend, bos=specials[0] if specials else None, eos=specials[1] if len(specials) > 1 else None)


N_BPE = 8000  # the committed data/tokenizer: 8,000 BPE tokens + 2 special + 62 reserved = 8,064 = 63 x 128


def main(argv=None) -> None:
    """python -m minids.tokenizer [folder]: train the project's tokenizer on the pre-training corpus's train
    split (minids.data.pretrain) and write folder/tokenizer.json (default data/tokenizer)."""
    import sys
    import time

    from .data.pretrain import pretrain_text

    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0] if argv else "data/tokenizer")
    text = pretrain_text("train")
    start = time.time()
    tok = train_tokenizer([text[i:i + 1_000_000] for i in range(0, len(text), 1_000_000)], n_bpe=N_BPE)
    tok.save(folder / "tokenizer.json")
    val = pretrain_text("val")
    n = len(tok.encode(val))
    print(f"{tok} trained on {len(text.encode()) / 1e6:.1f} MB in {time.time() - start:.0f} s; "
          f"validation split: {len(val.encode()) / n:.2f} bytes per token; wrote {folder / 'tokenizer.json'}")


if __name__ == "__main__":
    main()
