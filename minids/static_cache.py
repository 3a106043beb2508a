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

On a CPU there are no graphs to record; what a batch-1 step loses there is the matrix-vector products
themselves. Inductor by default hands each one to MKL, whose GEMV reads a (d_out, d_in) weight at ~12 GB/s
with one thread, half of what this machine streams (~27 GB/s for a plain sum). `compiled_step` therefore
compiles the CPU step with two Inductor options (`CPU_DECODE_INDUCTOR`):

    freezing       the weights become constants of the compiled program, so they can be re-laid out once
    max_autotune   Inductor times MKL against its own C++ GEMM template (AVX-512 micro-kernels over the
                   weights packed into cache-sized blocks, with RMSNorm and SiLU(gate) * up fused into the
                   products) and keeps the faster; at batch 1 the template wins

Measured with `python benchmarks/bench_decode_cpu.py`: about 2x transformers' decode on a ~110M model and
3x on the 12-layer miniature, same tokens (transformers given its static cache and the same settings gets 2.0x
and 2.3x of its own eager speed: most of the gain is Inductor's). The price, stated where it is paid: the compiled step holds a
second, packed copy of every weight matrix, takes ~30-60 s to compile on 2 cores, and does not see later
changes to the model's weights (StaticDecoder refuses to run once they changed).

Fused projections (optional, `fuse_projections`). At batch 1 every projection is a matrix-vector product
(GEMV) that reads its weight once; a 4096 x 4096 bf16 matrix (32 MB) is too small for one launch to reach
the GPU's full memory bandwidth, and each 7B layer launches 7 of them. `fuse_projections(model)` stacks, in
every layer, the rows of W_q, W_k, W_v into one (d_q + 2 d_kv, d_model) matrix and W_gate, W_up into one
(2 d_ff, d_model) matrix, then RE-HOMES the original parameters as row slices (views) of those matrices:

    fused_qkv = [ W_q ]  rows 0 .. d_q             q_proj.weight is fused_qkv[0 : d_q]
                [ W_k ]  rows d_q .. d_q + d_kv    k_proj.weight is fused_qkv[d_q : d_q + d_kv]
                [ W_v ]  rows ... d_q + 2 d_kv     v_proj.weight is fused_qkv[d_q + d_kv :]

So there is no second copy of the weights (the extra memory while fusing is one layer's projections), the
readable model computes exactly what it did, on the same storage, and state_dict / named_parameters are
unchanged (the Parameter objects stay the same; only where their numbers live changes). The static step then
runs 4 GEMVs per layer instead of 7: one for q, k, v, o -> 2, one for gate, up, down -> 2.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .decode_attention import DECODE_KERNELS, decode, visible_keys
from .generate import pad_prompts
from .kv_cache import KVCache
from .layer import DecoderLayer
from .model import DeepSeekLM
from .rope import apply_rope

CAPTURE_MODES = ("none", "graph", "compile")

# Inductor settings for the CPU decode step (see the module docstring): weights frozen into the compiled
# program and packed for Inductor's own GEMM kernels.
CPU_DECODE_INDUCTOR = dict(freezing=True, max_autotune=True)

# The fused matrices live on each DecoderLayer as plain attributes (not parameters, not buffers), so
# state_dict, named_parameters and named_buffers do not change.
FUSED_QKV, FUSED_GATE_UP = "_fused_qkv", "_fused_gate_up"


def _fused_groups(layer: DecoderLayer) -> dict[str, list[nn.Linear]]:
    """Which projections share one matrix: read the same input, so their rows can be stacked."""
    attn, mlp = layer.self_attn, layer.mlp
    gate_up = {FUSED_GATE_UP: [mlp.gate_proj, mlp.up_proj]} if hasattr(mlp, "gate_proj") else {}  # not MoE experts
    return {FUSED_QKV: [attn.q_proj, attn.k_proj, attn.v_proj], **gate_up}


def _views_intact(fused: torch.Tensor | None, linears: list[nn.Linear]) -> bool:
    """True if each linear's weight is still the row slice of `fused` that fuse_projections made it.

    False after anything that gave a parameter new storage: model.to(dtype or device), materialize, or
    assigning a new Parameter. (load_state_dict copies into the existing storage: the views survive it.)
    """
    if fused is None:
        return False
    start = 0
    for linear in linears:
        w = linear.weight
        rows = fused[start : start + w.shape[0]]
        same_place = w.dtype == fused.dtype and w.device == fused.device and w.data_ptr() == rows.data_ptr()
        if w.shape != rows.shape or not same_place:
            return False
        start += w.shape[0]
    return start == fused.shape[0]


def is_fused(model: DeepSeekLM) -> bool:
    """True if every layer's q/k/v and gate/up weights are live views of its fused matrices."""
    return all(_views_intact(getattr(layer, name, None), linears)
               for layer in model.layers for name, linears in _fused_groups(layer).items())


def fuse_projections(model: DeepSeekLM) -> DeepSeekLM:
    """Stack q/k/v and gate/up weights into one matrix each, per layer, and make the weights views of them.

    In place, layer by layer, without a second copy of the model: each group is copied into a new matrix and
    each original parameter is re-pointed (`param.data = rows`) at its rows, which frees its old storage.
    The Parameter objects themselves stay, so an optimizer, state_dict and the readable forward all work
    unchanged (and train the fused storage). Idempotent: layers already fused are skipped, layers whose views
    were broken (e.g. by model.to(...)) are fused again. Returns the model.

    The q/k/v (and gate/up) parameters then share one storage, in disjoint row ranges (safetensors'
    save_file accepts them: it refuses only overlapping tensors). `unfuse_projections` gives them their own.
    """
    if not isinstance(model, DeepSeekLM):
        raise TypeError(f"fuse_projections expects a DeepSeekLM, got {type(model).__name__}")
    # Plain tensors even when called under torch.inference_mode (StaticDecoder is): inference tensors as
    # parameters would break a later backward pass of the readable model.
    with torch.inference_mode(False), torch.no_grad():
        for i, layer in enumerate(model.layers):
            for name, linears in _fused_groups(layer).items():
                if _views_intact(getattr(layer, name, None), linears):
                    continue
                weights = [linear.weight for linear in linears]
                if len({(w.dtype, w.device, w.shape[1]) for w in weights}) != 1:
                    raise ValueError(
                        f"fuse_projections: layer {i} {name}: the weights must share dtype, device and input "
                        f"width, got {[(tuple(w.shape), w.dtype, str(w.device)) for w in weights]}")
                fused = torch.empty(sum(w.shape[0] for w in weights), weights[0].shape[1],
                                    dtype=weights[0].dtype, device=weights[0].device)
                start = 0
                for linear in linears:
                    rows = fused[start : start + linear.weight.shape[0]]  # contiguous: whole rows
                    rows.copy_(linear.weight)
                    linear.weight.data = rows  # the old storage is freed here (if nothing else holds it)
                    start += rows.shape[0]
                setattr(layer, name, fused)
    return model


def unfuse_projections(model: DeepSeekLM) -> DeepSeekLM:
    """Undo fuse_projections: every weight gets its own storage again (a copy), the fused matrices go."""
    with torch.inference_mode(False), torch.no_grad():
        for layer in model.layers:
            for name, linears in _fused_groups(layer).items():
                if getattr(layer, name, None) is None:
                    continue
                for linear in linears:
                    linear.weight.data = linear.weight.detach().clone()
                delattr(layer, name)
    return model


def qkv_projections(layer: DecoderLayer, h: torch.Tensor, fused: bool,
                    w: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """q (b, t, h*d), k and v (b, t, k*d): three GEMVs, or one over the fused matrix split by columns.

    w: the fused matrix, when the caller passes it (a compiled step takes it as an input, not an attribute).
    Refuses a sliding-window layer: the static step's mask (`key position <= pos`) has no window."""
    attn = layer.self_attn
    w = w if w is not None else getattr(layer, FUSED_QKV, None) if fused else None
    if attn.window is not None:
        raise ValueError(_WINDOWED_MESSAGE.format(who="static_decode_step", window=attn.window))
    if w is None:
        return attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)
    d_q, d_kv = attn.n_heads * attn.head_dim, attn.n_kv_heads * attn.head_dim
    return F.linear(h, w).split([d_q, d_kv, d_kv], dim=-1)


def feed_forward(layer: DecoderLayer, h: torch.Tensor, fused: bool, w: torch.Tensor | None = None) -> torch.Tensor:
    """SwiGLU: W_down(SiLU(W_gate h) * W_up h), with gate and up from one GEMV when fused (w as above)."""
    mlp = layer.mlp
    w = w if w is not None else getattr(layer, FUSED_GATE_UP, None) if fused else None
    if w is None:
        return mlp(h)
    gate, up = F.linear(h, w).chunk(2, dim=-1)
    return mlp.down_proj(F.silu(gate) * up)


def layer_in(layer: DecoderLayer, x: torch.Tensor, cos, sin, fused: bool, w_qkv: torch.Tensor | None,
             k_cache: torch.Tensor, v_cache: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """A layer up to attention: RMSNorm, q/k/v projections, RoPE, and the new token's key and value written
    into the layer's cache (b, k, max_len, d) at slot `pos` of every row. Returns q (b, h, 1, d).

    The cache write sits here, not beside the attention, so that a compiled layer_in does it inside the
    kernel that applies RoPE to k (Inductor turns `index_copy_` on an input into an in-place store)."""
    attn = layer.self_attn
    q, k, v = qkv_projections(layer, layer.input_layernorm(x), fused, w_qkv)
    q = rearrange(q, "b 1 (h d) -> b h 1 d", h=attn.n_heads)
    k = rearrange(k, "b 1 (k d) -> b k 1 d", k=attn.n_kv_heads)
    v = rearrange(v, "b 1 (k d) -> b k 1 d", k=attn.n_kv_heads)
    k_cache.index_copy_(2, pos, apply_rope(k, cos, sin))  # position pos of every row
    v_cache.index_copy_(2, pos, v)
    return apply_rope(q, cos, sin)


def layer_out(layer: DecoderLayer, x: torch.Tensor, out: torch.Tensor, fused: bool,
              w_gate_up: torch.Tensor | None = None) -> torch.Tensor:
    """A layer after attention: o_proj and residual, RMSNorm, SwiGLU and residual."""
    x = x + layer.self_attn.o_proj(rearrange(out, "b h 1 d -> b 1 (h d)"))
    return x + feed_forward(layer, layer.post_attention_layernorm(x), fused, w_gate_up)


def between_attentions(layer: DecoderLayer, x: torch.Tensor, out: torch.Tensor, fused: bool,
                       w_gate_up: torch.Tensor | None, nxt: DecoderLayer, cos, sin, w_qkv: torch.Tensor | None,
                       k_cache: torch.Tensor, v_cache: torch.Tensor, pos: torch.Tensor):
    """Everything from one layer's attention output to the next layer's query: layer_out, then layer_in of
    `nxt`. One function, so that compiled it makes the residual add ending a layer and the RMSNorm opening the
    next one kernel. Returns the residual stream x and the next layer's q."""
    x = layer_out(layer, x, out, fused, w_gate_up)
    return x, layer_in(nxt, x, cos, sin, fused, w_qkv, k_cache, v_cache, pos)


def last_layer_out(layer: DecoderLayer, x: torch.Tensor, out: torch.Tensor, fused: bool,
                   w_gate_up: torch.Tensor | None, norm: nn.Module) -> torch.Tensor:
    """The last layer after attention, then the final RMSNorm (the LM head's input)."""
    return norm(layer_out(layer, x, out, fused, w_gate_up))


@functools.lru_cache(maxsize=None)
def compiled_pieces() -> tuple[Callable, Callable, Callable]:
    """layer_in, between_attentions and last_layer_out compiled by Inductor (default mode: no CUDA graphs of its
    own, so a CUDAGraphStep can record the kernels it launches). The element-wise work between two attentions
    (residual adds, RMSNorms in float32, SiLU * up, RoPE, the cache writes: ~25 small kernels per layer in
    eager PyTorch) becomes a few fused kernels around the matrix products. The layers are arguments, so one
    compilation serves every layer of the same shape; the fused matrices are passed as inputs (they are plain
    attributes, which torch.compile would otherwise treat as per-layer constants). Attention stays outside."""
    from .recompile import allow_recompiles

    allow_recompiles(64)
    return tuple(torch.compile(f, fullgraph=True) for f in (layer_in, between_attentions, last_layer_out))


def static_decode_step(
    model: DeepSeekLM, cache: KVCache, token: torch.Tensor, pos: torch.Tensor, fused: bool = False,
    pad: torch.Tensor | None = None, attn: str = "sdpa", compile_layers: bool = False,
) -> torch.Tensor:
    """Logits (b, vocab) for the next position, given token (b, 1) at position pos (a (1,) long tensor).

    Writes this token's keys and values into `cache` at `pos` for every layer; does not touch cache.length
    (the caller keeps the position in `pos`). Same function as model(token, cache, last_only=True).
    fused: use the layers' fused q/k/v and gate/up matrices (see fuse_projections) where they exist.
    pad: (b,) left-padding of each row (a batch of prompts of different lengths): row b's token sits at
    position pos - pad[b] of its own sequence, and its first pad[b] cache slots are hidden.
    attn: the decode attention kernel, one of DECODE_KERNELS (minids/decode_attention.py): "sdpa" (the
    mask-taking fused kernel, one block per row and KV head), "einsum" (grouped_einsum_decode, the readable
    reference), "flex" (FlexAttention's split-KV decoding kernel) or "triton" (minids' own split-KV kernel);
    on a CPU "flex" and "triton" run the einsum. The same function; benchmarks/bench_batched_decode.py
    measures them against each other.
    compile_layers: run the pieces between attentions (layer_in, between_attentions, last_layer_out) through
    Inductor, compiled once for all layers (compiled_pieces); the same function, fewer and fused kernels.
    """
    batch = token.shape[0]
    start = pad if pad is not None else torch.zeros(batch, dtype=torch.long, device=pos.device)
    end = (pos + 1).expand(batch)  # the keys written so far, this token's included
    keys = visible_keys(attn, start, end, cache.max_len)  # the mask or block lists: once per step, not per layer
    if pad is None:
        cos, sin = model.rope(pos)  # (1, d): gathered on the device, no Python int involved
    else:
        cos, sin = model.rope(pos - pad)  # (b, d): each row's own position
        cos, sin = rearrange(cos, "b d -> b 1 1 d"), rearrange(sin, "b d -> b 1 1 d")
    first, between, last = compiled_pieces() if compile_layers else (layer_in, between_attentions, last_layer_out)
    w_qkv = [getattr(layer, FUSED_QKV, None) if fused else None for layer in model.layers]
    w_gate_up = [getattr(layer, FUSED_GATE_UP, None) if fused else None for layer in model.layers]
    layers = list(model.layers)
    x = model.embed_tokens(token)  # (b, 1, d_model)
    q = first(layers[0], x, cos, sin, fused, w_qkv[0], cache.keys[0], cache.values[0], pos)
    for i, layer in enumerate(layers):
        out = decode(q, cache.keys[i], cache.values[i], keys)  # (b, h, 1, d) over the whole static cache
        if i + 1 < len(layers):
            x, q = between(layer, x, out, fused, w_gate_up[i],
                           layers[i + 1], cos, sin, w_qkv[i + 1], cache.keys[i + 1], cache.values[i + 1], pos)
        else:
            x = last(layer, x, out, fused, w_gate_up[i], model.norm)
    return model.lm_head(x)[:, 0]


_WINDOWED_MESSAGE = (
    "{who}: the static step supports full-attention models only (its mask is `key position <= pos` over a "
    "KVCache); this model has sliding-window layers (sliding_window={window}): decode it with minids.generate, "
    "which uses the rolling cache")


def _check_full_attention(model: DeepSeekLM, who: str) -> None:
    if model.config.is_mla:
        raise ValueError(f"{who}: the static step is written for GQA's KVCache; this model uses multi-head latent "
                         "attention (kv_lora_rank set): decode it with minids.generate, which uses its LatentKVCache")
    if model.config.windowed:
        raise ValueError(_WINDOWED_MESSAGE.format(who=who, window=model.config.sliding_window))


class CUDAGraphStep:
    """static_decode_step recorded once into a CUDA graph; calling it copies the inputs in and replays.

    Build it after the prefill: the warm-up runs write (harmless) keys at the current position, which the
    real step at that position overwrites. The returned logits live in the graph's memory and are
    overwritten by the next call: use them (argmax, sampling) before calling again.
    """

    def __init__(self, model: DeepSeekLM, cache: KVCache, pos: int, fused: bool = False, attn: str = "sdpa",
                 compile_layers: bool = False) -> None:
        device = cache.keys[0].device
        if device.type != "cuda":
            raise ValueError(f"CUDAGraphStep needs a CUDA model and cache, got device {device}")
        self.token = torch.zeros(cache.batch, 1, dtype=torch.long, device=device)
        self.pos = torch.full((1,), pos, dtype=torch.long, device=device)
        self.pad = torch.zeros(cache.batch, dtype=torch.long, device=device)  # rows' left padding, copied in
        step = lambda: static_decode_step(  # noqa: E731
            model, cache, self.token, self.pos, fused, self.pad, attn, compile_layers)
        side = torch.cuda.Stream()  # CUDA requires the warm-up before capture to run on a side stream
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = step()

    def __call__(self, token: torch.Tensor, pos: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        self.token.copy_(token)
        self.pos.copy_(pos)
        self.pad.copy_(pad) if pad is not None else self.pad.zero_()
        self.graph.replay()
        return self.logits


def compiled_step(
    model: DeepSeekLM, cache: KVCache, fused: bool = False, attn: str = "sdpa"
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """torch.compile of the static step: fused kernels; on CUDA mode="reduce-overhead" replays CUDA graphs.

    On a CPU (no CUDA graphs) it compiles with CPU_DECODE_INDUCTOR: the weights are frozen and packed for
    Inductor's GEMM template. Freezing only happens when the step is compiled without autograd (under
    torch.inference_mode or torch.no_grad, as StaticDecoder calls it), and the compiled step then keeps its
    own copy of the weights: build a new one after changing them.
    """
    on_cuda = cache.keys[0].device.type == "cuda"
    for buffer in cache.keys + cache.values:  # mutated in place every step: their addresses must not move
        torch._dynamo.mark_static_address(buffer)
    for layer in model.layers if fused else []:  # plain attributes, not parameters: without this, the CUDA
        for name in (FUSED_QKV, FUSED_GATE_UP):  # graphs would copy them (all the weights) in at every replay
            if getattr(layer, name, None) is not None:
                torch._dynamo.mark_static_address(getattr(layer, name))

    def step(token, pos, pad):
        return static_decode_step(model, cache, token, pos, fused, pad, attn)

    if on_cuda:
        compiled_cuda = torch.compile(step, mode="reduce-overhead", fullgraph=True)
        return lambda token, pos, pad=None: compiled_cuda(token, pos, pad)
    compiled = torch.compile(step, fullgraph=True)

    def cpu_step(token, pos, pad=None):
        # Inductor reads these settings when it compiles, which happens inside the first call (and any
        # recompile), so they are set around every call rather than for the whole process.
        import torch._inductor.config as inductor_config

        with inductor_config.patch(**CPU_DECODE_INDUCTOR):
            return compiled(token, pos, pad)

    return cpu_step


def weights_fingerprint(model: nn.Module) -> list[tuple[int, int]]:
    """(address, version counter) of every parameter: changes when a weight is replaced or edited in place."""
    return [(p.data_ptr(), p._version) for p in model.parameters()]


class StaticDecoder:
    """Greedy generation with the static step; the cache and the recorded/compiled step are made once.

    capture: "none" (eager static step, any device), "graph" (CUDAGraphStep) or "compile" (compiled_step).
    attn: the step's decode attention kernel, one of DECODE_KERNELS (see static_decode_step).
    compile_layers: compile the code between two attentions with Inductor (capture "graph" or "none";
    capture "compile" compiles the whole step anyway).
    fuse: run fuse_projections(model) (in place, no second copy) and use one GEMV for q/k/v and one for
    gate/up. None (the default) means True on CUDA, where fewer and larger GEMVs read the weights closer to
    full bandwidth, and False elsewhere, so that on a CPU the step stays the literal one the chapter shows and
    the model's parameters keep their own storage. fuse=False uses the separate projections even if the model
    was fused before (the weights are the same numbers either way).
    Each `generate` call prefills the prompt with the readable model forward into the same KVCache
    buffers, then runs the static step; the result equals generate(model, ids, n) with temperature 0.
    On a CPU, capture="compile" freezes the weights into the compiled step (see compiled_step); `generate`
    raises if the model's weights were replaced or edited since, rather than decode with stale ones.
    """

    @torch.inference_mode()
    def __init__(self, model: DeepSeekLM, batch: int = 1, max_len: int | None = None, capture: str = "none",
                 fuse: bool | None = None, attn: str = "sdpa", compile_layers: bool = False):
        if capture not in CAPTURE_MODES:
            raise ValueError(f"capture must be one of {CAPTURE_MODES}, got {capture!r}")
        if attn not in DECODE_KERNELS:
            raise ValueError(f"attn must be one of {DECODE_KERNELS}, got {attn!r}")
        if fuse not in (None, True, False):
            raise ValueError(f"fuse must be None (True on CUDA, False elsewhere), True or False, got {fuse!r}")
        _check_full_attention(model, "StaticDecoder")
        self.model, self.capture = model, capture
        on_cpu = model.lm_head.weight.device.type == "cpu"
        self.frozen = capture == "compile" and on_cpu  # the compiled CPU step keeps its own packed weights
        self.fuse = model.lm_head.weight.device.type == "cuda" if fuse is None else fuse
        if self.fuse:  # before capture: the graphs must record the fused matrices' addresses
            fuse_projections(model)
        self.fingerprint = weights_fingerprint(model) if self.frozen else None
        self.cache = model.new_kv_cache(batch, max_len)
        if capture == "graph":  # recorded now; the warm-up writes at position 0 are overwritten by prefill
            self.step = CUDAGraphStep(model, self.cache, pos=0, fused=self.fuse, attn=attn,
                                      compile_layers=compile_layers)
        elif capture == "compile":  # compiled (and its graphs recorded) on the first calls
            self.step = compiled_step(model, self.cache, fused=self.fuse, attn=attn)
        else:
            self.step = lambda token, pos, pad=None: static_decode_step(  # noqa: E731
                model, self.cache, token, pos, self.fuse, pad, attn, compile_layers)

    @torch.inference_mode()
    def generate(self, ids: torch.Tensor | list[torch.Tensor], max_new_tokens: int):
        """Prompt + max_new_tokens greedy ids, (b, t + max_new_tokens).

        ids may be a list of 1-D prompts of different lengths (at most the decoder's batch of them): they are
        left-padded into one batch as `generate` does, and a list comes back, each prompt + its new tokens.
        """
        prompts, pad = None, None
        if isinstance(ids, (list, tuple)):
            prompts = ids
            ids, pad = pad_prompts(prompts)
        batch, prompt_len = ids.shape
        if batch != self.cache.batch or max_new_tokens < 1 or prompt_len + max_new_tokens > self.cache.max_len:
            raise ValueError(
                f"StaticDecoder.generate: ids {tuple(ids.shape)} and max_new_tokens {max_new_tokens} must fit "
                f"the cache (batch {self.cache.batch}, max_len {self.cache.max_len}), with max_new_tokens >= 1"
            )
        if self.fuse and not is_fused(self.model):
            raise RuntimeError(
                "StaticDecoder.generate: the model's q/k/v or gate/up weights are no longer views of the fused "
                "matrices (moved or replaced after the decoder was built, e.g. by model.to(...)); build a new "
                "StaticDecoder")
        if self.frozen and weights_fingerprint(self.model) != self.fingerprint:
            raise RuntimeError(
                "StaticDecoder.generate: the model's weights changed after this decoder compiled its CPU step, "
                "which holds a frozen copy of them; build a new StaticDecoder to decode with the new weights")
        self.cache.reset()
        token = self.model(ids, self.cache, pad=pad, last_only=True)[:, -1].argmax(-1, keepdim=True)  # prefill
        pos = torch.full((1,), prompt_len, dtype=torch.long, device=ids.device)
        new = [token]
        for _ in range(max_new_tokens - 1):
            if self.capture == "compile" and ids.is_cuda:
                torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs may be overwritten
            token = self.step(token, pos, pad).argmax(-1, keepdim=True)
            pos += 1
            new.append(token)
        out = torch.cat([ids] + new, dim=1)
        if prompts is None:
            return out
        return [torch.cat([p, out[row, prompt_len:]]) for row, p in enumerate(prompts)]
