"""Text generation with the KV cache: greedy decoding and sampling (temperature, top-k, top-p).

Generation has two phases with very different costs:

    prefill  the whole prompt (b, t) goes through the model in one forward pass; its keys and values fill
             the first t positions of the cache. Big matrix products: bound by compute.
    decode   one token per step: the model reads every weight once to produce one row of logits, and the
             new token's keys and values are appended to the cache. Tiny products: bound by memory
             bandwidth (how fast the weights stream from memory), not by arithmetic.

The cache is allocated once, for prompt + max_new_tokens positions (`model.new_kv_cache`), so no step
allocates or copies it. Decode steps skip the id range check (`validate=False`: the ids come from the model's
own argmax or sampling, so they are in range by construction, and checking would read them back from the
device) and compute logits for the last position only (`last_only=True`). A model with sliding-window layers
gets a RollingKVCache instead (only the last W positions of each window layer; rolling_cache.py); the prompt
still goes in one pass (the cache takes a chunk of any length; rolling_cache.prefill splits a long prompt
into chunks of W, as Mistral does, to bound the memory of that pass).

`stream_generate` yields each new token as it is chosen (for notebooks and chat loops); `generate` collects
them into one (b, prompt + new) tensor. With temperature 0 the choice is the argmax (greedy), which is what
transformers' `generate(do_sample=False)` does; the tests check both give the same ids.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch

from .model import DeepSeekLM


# ---- choosing the next token ------------------------------------------------------------------------
def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row, set the others to -inf. logits: (b, vocab)."""
    k = min(k, logits.shape[-1])
    kth_largest = torch.topk(logits, k, dim=-1).values[:, -1:]  # (b, 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of tokens whose probabilities add up to at least p.

    Sorted from most to least likely, a token is kept when the probability mass *before* it is below p, so
    the most likely token always survives and p = 1 keeps everything.
    """
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    sorted_logits = sorted_logits.masked_fill(mass_before >= p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def sample_next(
    logits: torch.Tensor,  # (b, vocab): the scores for the next position
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The next token of each row, shape (b,). temperature 0 means greedy (argmax; top_k/top_p unused)."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature  # < 1 sharpens the distribution, > 1 flattens it
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None and top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


# ---- the generation loop ----------------------------------------------------------------------------
@torch.inference_mode()
def stream_generate(
    model: DeepSeekLM,
    ids: torch.Tensor,  # (b, t) prompt token ids, torch.long
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
    pad: torch.Tensor | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the new tokens one step at a time, each a LongTensor of shape (b,).

    With eos_id, a row that has produced eos_id keeps producing eos_id (padding), and the stream stops
    once every row has finished; so a stream can be shorter than max_new_tokens.
    pad: (b,) left-padding of each row of ids (prompts of different lengths, see `pad_prompts`).
    """
    check_generate_args(model, ids, max_new_tokens, temperature, top_k, top_p, generator, eos_id)
    if max_new_tokens == 0:
        return
    batch, prompt_len = ids.shape
    cache = model.new_kv_cache(batch, max_len=prompt_len + max_new_tokens)  # allocated once, for every step
    choose = lambda logits: sample_next(logits, temperature, top_k, top_p, generator)  # noqa: E731

    logits = model(ids, cache, pad=pad, last_only=True)  # prefill: (b, 1, vocab); the cache keeps pad
    finished = torch.zeros(batch, dtype=torch.bool, device=ids.device)
    for step in range(max_new_tokens):
        token = choose(logits[:, -1])  # (b,)
        if eos_id is not None:
            token = token.masked_fill(finished, eos_id)
            finished |= token == eos_id
        yield token
        if step == max_new_tokens - 1 or (eos_id is not None and bool(finished.all())):
            return
        logits = model(token[:, None], cache, last_only=True, validate=False)  # decode: one position


def generate(
    model: DeepSeekLM,
    ids: torch.Tensor | list[torch.Tensor],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
) -> torch.Tensor | list[torch.Tensor]:
    """The prompt followed by the generated tokens: LongTensor (b, prompt + new).

    new = max_new_tokens, or fewer when every row has reached eos_id. Greedy when temperature is 0;
    otherwise samples from softmax(logits / temperature), optionally restricted to the top_k tokens and/or
    the top_p probability mass. Pass a seeded torch.Generator to make sampling reproducible.

    ids may also be a list of 1-D prompts of different lengths, served as ONE batch (one prefill, one
    decode step per token for all of them): they are left-padded to one length (`pad_prompts`), and each
    row gets its own positions and a mask that hides the padding, so each prompt's tokens are those it
    would get alone (greedy: the same tokens). Returns then a list: each prompt followed by its new tokens,
    ending at its first eos_id (included) when one is given.
    """
    if isinstance(ids, (list, tuple)):
        batch, pad = pad_prompts(ids)
        new = list(stream_generate(model, batch, max_new_tokens, temperature, top_k, top_p, generator, eos_id, pad))
        new = torch.stack(new, dim=1) if new else batch.new_zeros(len(ids), 0)  # (b, new)
        out = []
        for row, prompt in enumerate(ids):
            tokens = new[row]
            if eos_id is not None and bool((tokens == eos_id).any()):
                tokens = tokens[: int((tokens == eos_id).nonzero()[0]) + 1]  # up to its own eos
            out.append(torch.cat([prompt, tokens]))
        return out
    new = list(stream_generate(model, ids, max_new_tokens, temperature, top_k, top_p, generator, eos_id))
    if not new:
        return ids.clone()
    return torch.cat([ids, torch.stack(new, dim=1)], dim=1)


def pad_prompts(prompts, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad 1-D prompts of different lengths into one batch: ids (b, longest) and pad (b,) long.

    Left, not right: every row's last real token then sits in the last column, so one decode step appends
    the next token of every row in the same column. The padding id does not matter (those keys are masked
    out and their positions never used); pad[b] counts row b's padding tokens.
    """
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError("generate: a batch of prompts must be a non-empty list of 1-D token tensors")
    for i, p in enumerate(prompts):
        if not isinstance(p, torch.Tensor) or p.dtype != torch.long or p.ndim != 1 or p.numel() == 0:
            raise ValueError(f"generate: prompt {i} must be a non-empty 1-D torch.long tensor of token ids, "
                             f"got {p!r}" if not isinstance(p, torch.Tensor) else
                             f"generate: prompt {i} must be a non-empty 1-D torch.long tensor of token ids, "
                             f"got shape {tuple(p.shape)} and dtype {p.dtype}")
        if p.device != prompts[0].device:
            raise ValueError(f"generate: prompt {i} is on {p.device}, prompt 0 on {prompts[0].device}; "
                             "put every prompt on the model's device")
    longest = max(p.numel() for p in prompts)
    ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long, device=prompts[0].device)
    for row, p in enumerate(prompts):
        ids[row, longest - p.numel():] = p
    pad = torch.tensor([longest - p.numel() for p in prompts], dtype=torch.long, device=ids.device)
    return ids, pad


# ---- text in, text out --------------------------------------------------------------------------------
def stream_text(model: DeepSeekLM, tokenizer, prompt: str, max_new_tokens: int, bos: bool = True,
                **sampling) -> Iterator[str]:
    """Yield the completion of `prompt` as text, piece by piece, as the tokens are chosen (stops at eos).

    `tokenizer` is a minids.tokenizer.Tokenizer; `sampling` takes stream_generate's temperature, top_k, top_p
    and generator. Byte-level BPE can spread one character over several tokens: tokens are held back while
    their text ends in an incomplete character, so every piece is whole text and the pieces join to exactly
    tokenizer.decode(new tokens); only the held-back tokens are decoded at each step, so a step costs the
    same however long the text already is.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"stream_text takes the prompt as a str, got {type(prompt).__name__}")
    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer.encode(prompt, bos=bos and tokenizer.bos_id is not None)], device=device)
    pending: list[int] = []  # tokens since the last whole character: only these are decoded each step
    for token in stream_generate(model, ids, max_new_tokens, eos_id=tokenizer.eos_id, **sampling):
        if tokenizer.eos_id is not None and int(token[0]) == tokenizer.eos_id:
            break
        pending.append(int(token[0]))
        text = tokenizer.decode(pending)
        if not text.endswith("\ufffd"):  # else the last character is not complete yet
            yield text
            pending = []
    if pending:
        yield tokenizer.decode(pending)


def generate_text(model: DeepSeekLM, tokenizer, prompt: str, max_new_tokens: int, bos: bool = True,
                  **sampling) -> str:
    """The completion of `prompt` as one string (stream_text, joined)."""
    return "".join(stream_text(model, tokenizer, prompt, max_new_tokens, bos=bos, **sampling))


# ---- argument checks ----------------------------------------------------------------------------------
def check_generate_args(model, ids, max_new_tokens, temperature, top_k, top_p, generator, eos_id) -> None:
    """Fail early, with a message that says what is allowed, before any compute is spent."""
    if not isinstance(model, DeepSeekLM):
        raise TypeError(f"generate: model must be a DeepSeekLM, got {type(model).__name__}")
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"generate: ids must be a torch.Tensor of shape (batch, seq), got {type(ids).__name__}")
    if ids.dtype != torch.long:
        raise TypeError(f"generate: ids must have dtype torch.long (token ids), got {ids.dtype}")
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"generate: ids must have shape (batch, seq) with batch, seq >= 1, got {tuple(ids.shape)}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    total, limit = ids.shape[1] + max_new_tokens, model.config.max_seq_len
    if total > limit:
        raise ValueError(
            f"generate: prompt ({ids.shape[1]}) + max_new_tokens ({max_new_tokens}) = {total} tokens exceeds "
            f"the model's max_seq_len ({limit})"
        )
    if (isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0
            or not math.isfinite(temperature)):  # inf would divide every logit to 0: uniform sampling, silently
        raise ValueError(f"generate: temperature must be a number >= 0, and finite (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"generate: top_k must be None or an int >= 1, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"generate: top_p must be None or a number in (0, 1], got {top_p!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generate: generator must be a torch.Generator or None, got {type(generator).__name__}")
    vocab = model.config.vocab_size
    if eos_id is not None and (isinstance(eos_id, bool) or not isinstance(eos_id, int) or not 0 <= eos_id < vocab):
        raise ValueError(f"generate: eos_id must be None or an int in [0, vocab_size) = [0, {vocab}), got {eos_id!r}")
