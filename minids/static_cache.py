"""A decode step with fixed shapes, so that a GPU can record it once and replay it (CUDA graphs).

At batch 1 a decode step of the 7B is ~30 layers x ~15 small kernels. On an H200 the weights stream in
about 3.2 ms, but launching ~500 kernels from Python costs tens of ms: the GPU waits for the CPU. A CUDA
graph records the kernels of one step once and replays them with one launch. Recording needs a step whose
every tensor has the same shape and address at every position, which the readable path does not have
(its cache slice `[:, :, :length]` grows, and `length` is a Python int). This file rewrites only the
attention wiring of the step, with the model's own modules:

    - the cache buffers are the full (b, k, max_len, d) tensors of a KVCache, never sliced;
    - the position is a device tensor `pos` (1,), not a Python int; the new key/value are written at `pos`
      with `index_copy_`, and RoPE's cos/sin are gathered at `pos`;
    - attention runs over the whole buffer with a mask `key position <= pos` (positions not yet written
      are hidden, so what they hold does not matter).

`static_decode_step` is that step (a plain function: it runs eagerly on the CPU too, which is how the tests
check it against the readable path). `CUDAGraphStep` records it into a torch.cuda.CUDAGraph;
`compiled_step` hands it to torch.compile(mode="reduce-overhead"), which fuses the small element-wise
kernels and records CUDA graphs itself. `StaticDecoder` drives any of them.
"""

from __future__ import annotations

from typing import Callable

import torch
from einops import rearrange

from .attention import decode_attention
from .kv_cache import KVCache
from .model import DeepSeekLM
from .rope import apply_rope

CAPTURE_MODES = ("none", "graph", "compile")


def static_decode_step(model: DeepSeekLM, cache: KVCache, token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Logits (b, vocab) for the next position, given token (b, 1) at position pos (a (1,) long tensor).

    Writes this token's keys and values into `cache` at `pos` for every layer; does not touch cache.length
    (the caller keeps the position in `pos`). Same function as model(token, cache, last_only=True).
    """
    max_len = cache.max_len
    cos, sin = model.rope(pos)  # (1, d): gathered on the device, no Python int involved
    visible = torch.arange(max_len, device=pos.device) <= pos  # (max_len,): the keys written so far
    visible = rearrange(visible, "s -> 1 1 1 s")  # broadcast over (b, k, r, s)
    x = model.embed_tokens(token)  # (b, 1, d_model)
    for i, layer in enumerate(model.layers):
        attn = layer.self_attn
        h = layer.input_layernorm(x)
        q = rearrange(attn.q_proj(h), "b 1 (h d) -> b h 1 d", h=attn.n_heads)
        k = rearrange(attn.k_proj(h), "b 1 (k d) -> b k 1 d", k=attn.n_kv_heads)
        v = rearrange(attn.v_proj(h), "b 1 (k d) -> b k 1 d", k=attn.n_kv_heads)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        cache.keys[i].index_copy_(2, pos, k)  # (b, k, max_len, d): position pos of every row
        cache.values[i].index_copy_(2, pos, v)
        out = decode_attention(q, cache.keys[i], cache.values[i], mask=visible)
        x = x + attn.o_proj(rearrange(out, "b h 1 d -> b 1 (h d)"))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return model.lm_head(model.norm(x))[:, 0]


class CUDAGraphStep:
    """static_decode_step recorded once into a CUDA graph; calling it copies the inputs in and replays.

    Build it after the prefill: the warm-up runs write (harmless) keys at the current position, which the
    real step at that position overwrites. The returned logits live in the graph's memory and are
    overwritten by the next call: use them (argmax, sampling) before calling again.
    """

    def __init__(self, model: DeepSeekLM, cache: KVCache, pos: int) -> None:
        device = cache.keys[0].device
        if device.type != "cuda":
            raise ValueError(f"CUDAGraphStep needs a CUDA model and cache, got device {device}")
        self.token = torch.zeros(cache.batch, 1, dtype=torch.long, device=device)
        self.pos = torch.full((1,), pos, dtype=torch.long, device=device)
        step = lambda: static_decode_step(model, cache, self.token, self.pos)  # noqa: E731
        side = torch.cuda.Stream()  # CUDA requires the warm-up before capture to run on a side stream
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = step()

    def __call__(self, token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        self.token.copy_(token)
        self.pos.copy_(pos)
        self.graph.replay()
        return self.logits


def compiled_step(model: DeepSeekLM, cache: KVCache) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """torch.compile of the static step: fused kernels; on CUDA mode="reduce-overhead" replays CUDA graphs.

    On a CPU the default mode applies (there are no CUDA graphs; fusing the small element-wise operations
    into a few C++ loops is what it gains).
    """
    on_cuda = cache.keys[0].device.type == "cuda"
    for buffer in cache.keys + cache.values:  # mutated in place every step: their addresses must not move
        torch._dynamo.mark_static_address(buffer)

    def step(token, pos):
        return static_decode_step(model, cache, token, pos)

    return torch.compile(step, mode="reduce-overhead" if on_cuda else None, fullgraph=True)


class StaticDecoder:
    """Greedy generation with the static step; the cache and the recorded/compiled step are made once.

    capture: "none" (eager static step, any device), "graph" (CUDAGraphStep) or "compile" (compiled_step).
    Each `generate` call prefills the prompt with the readable model forward into the same KVCache
    buffers, then runs the static step; the result equals generate(model, ids, n) with temperature 0.
    """

    @torch.inference_mode()
    def __init__(self, model: DeepSeekLM, batch: int = 1, max_len: int | None = None, capture: str = "none"):
        if capture not in CAPTURE_MODES:
            raise ValueError(f"capture must be one of {CAPTURE_MODES}, got {capture!r}")
        self.model, self.capture = model, capture
        self.cache = model.new_kv_cache(batch, max_len)
        if capture == "graph":  # recorded now; the warm-up writes at position 0 are overwritten by prefill
            self.step = CUDAGraphStep(model, self.cache, pos=0)
        elif capture == "compile":  # compiled (and its graphs recorded) on the first calls
            self.step = compiled_step(model, self.cache)
        else:
            self.step = lambda token, pos: static_decode_step(model, self.cache, token, pos)  # noqa: E731

    @torch.inference_mode()
    def generate(self, ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Prompt + max_new_tokens greedy ids, (b, t + max_new_tokens)."""
        batch, prompt_len = ids.shape
        if batch != self.cache.batch or max_new_tokens < 1 or prompt_len + max_new_tokens > self.cache.max_len:
            raise ValueError(
                f"StaticDecoder.generate: ids {tuple(ids.shape)} and max_new_tokens {max_new_tokens} must fit "
                f"the cache (batch {self.cache.batch}, max_len {self.cache.max_len}), with max_new_tokens >= 1"
            )
        self.cache.reset()
        token = self.model(ids, self.cache, last_only=True)[:, -1].argmax(-1, keepdim=True)  # prefill
        pos = torch.full((1,), prompt_len, dtype=torch.long, device=ids.device)
        new = [token]
        for _ in range(max_new_tokens - 1):
            if self.capture == "compile" and ids.is_cuda:
                torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs may be overwritten
            token = self.step(token, pos).argmax(-1, keepdim=True)
            pos += 1
            new.append(token)
        return torch.cat([ids] + new, dim=1)
