"""Decode attention split along the cache ("flash-decoding", split-KV): one new token per row, many keys.

A decode step asks, for every row b and query head, softmax(q K^T / sqrt(d)) V over the row's cached keys.
The readable version is `grouped_einsum_decode` (minids/attention.py): two batched products per (b, KV head).
A fused kernel that gives one thread block to each (b, KV head) has, for GQA at batch 1, 4 or 8 blocks on a
132-SM card: each block walks thousands of keys alone and the card's memory sits mostly idle. Split-KV cuts
each row's keys into `splits` pieces, one block per (b, KV head, split), each computing a partial softmax:

    split j sees keys S_j:   m_j = max_s x_s,   l_j = sum_s exp(x_s - m_j),   o_j = sum_s exp(x_s - m_j) v_s / l_j
    merge (log-sum-exp):     lse_j = m_j + log l_j,   out = sum_j exp(lse_j - M) o_j / sum_j exp(lse_j - M)

with x_s = q . k_s / sqrt(d) and M = max_j lse_j. That is exactly the softmax over all keys (each split's
weights are rescaled by exp(lse_j - M) / sum), so no approximation is made; only the order of the sums changes.
All r query heads of a KV group share one block, so each cached key and value is read once per step.

Which keys a row sees is given per row as slots start[b] <= s < end[b] of the static cache: `start` is the
row's left padding, `end` the position after the new token (see static_cache.static_decode_step).
`visible_keys` builds what each kernel needs from these two device tensors ONCE per step, and `decode` runs
one layer's attention with it:

    "sdpa"     F.scaled_dot_product_attention with a dense (b, 1, 1, s) mask: its mask-taking kernel does
               not split the keys (what minids used before; kept for comparison)
    "einsum"   grouped_einsum_decode: the readable reference, and the fallback on a CPU and below torch 2.5
    "flex"     FlexAttention's decoding kernel (torch >= 2.5, CUDA, compiled): a block mask of ONE head
               (H = None) listing, per row, only the 128-key blocks between start and end, none marked "full",
               and enable_gqa so a group's query heads share one block; inductor picks its split-KV template
               when the query length is < 128, batch and heads are static and r is a power of two
    "triton"   the small Triton kernel below (two stages: partial attention per split, log-sum-exp merge),
               a fixed number of splits per shape with each row's split length computed in the kernel from
               its own start and end, so the launch never changes and a CUDA graph can replay it

On a CPU "flex" and "triton" compute through "einsum" (the same function; tests/test_decode_attention.py
checks each kernel against it, and benchmarks/bench_batched_decode.py checks again on the GPU before timing).
Sources: flash-decoding and the published split-KV kernels, docs/references.md#split-kv.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass

import torch
from einops import rearrange

from .attention import FLEX_AVAILABLE, grouped_einsum_decode

if FLEX_AVAILABLE:  # torch >= 2.5
    from torch.nn.attention.flex_attention import BlockMask, flex_attention
else:
    BlockMask = flex_attention = None

try:  # Triton comes with CUDA builds of torch; a CPU-only install has none
    import triton
    import triton.language as tl

    TRITON_AVAILABLE = True
except ImportError:
    triton = tl = None
    TRITON_AVAILABLE = False

DECODE_KERNELS = ("sdpa", "einsum", "flex", "triton")
FLEX_BLOCK = 128  # keys per block of the flex block mask (FlexAttention's default tile)


@dataclass
class VisibleKeys:
    """Which cache slots each row sees in this step, in the form the chosen kernel takes. Built once per step.

    start, end: (b,) long, row b sees slots start[b] <= s < end[b]. mask: dense (b, 1, 1, max_len) boolean
    for "sdpa" and "einsum". kv_num_blocks (b, 1, 1) and kv_indices (b, 1, 1, n_blocks): int32, the flex
    block mask's blocks per row (only those that hold a visible key, listed first).
    """

    kernel: str
    start: torch.Tensor
    end: torch.Tensor
    max_len: int
    mask: torch.Tensor | None = None
    kv_num_blocks: torch.Tensor | None = None
    kv_indices: torch.Tensor | None = None


def runs_as(kernel: str, device: torch.device) -> str:
    """The kernel that actually runs: "flex" and "triton" need CUDA (and torch >= 2.5 / Triton), else "einsum"."""
    if kernel not in DECODE_KERNELS:
        raise ValueError(f"decode kernel {kernel!r} is not one of {DECODE_KERNELS}")
    if kernel == "flex" and not (FLEX_AVAILABLE and device.type == "cuda"):
        return "einsum"
    if kernel == "triton" and not (TRITON_AVAILABLE and device.type == "cuda"):
        return "einsum"
    return kernel


def visible_keys(kernel: str, start: torch.Tensor, end: torch.Tensor, max_len: int) -> VisibleKeys:
    """Build once per step what `kernel` needs to see slots start[b] <= s < end[b] of a max_len cache.

    Only device-tensor arithmetic (no .item(), no Python loop over rows), so it can be recorded in a CUDA graph.
    """
    kernel = runs_as(kernel, start.device)
    keys = VisibleKeys(kernel, start, end, max_len)
    if kernel in ("sdpa", "einsum"):
        slots = torch.arange(max_len, device=start.device)
        keys.mask = rearrange((slots >= start[:, None]) & (slots < end[:, None]), "b s -> b 1 1 s")
    elif kernel == "flex":
        keys.kv_num_blocks, keys.kv_indices = flex_decode_blocks(start, end, max_len)
    elif kernel == "triton":  # the kernel reads int32; converted here once, not in each of the layers
        keys.start, keys.end = start.to(torch.int32), end.to(torch.int32)
    return keys


def flex_decode_blocks(start: torch.Tensor, end: torch.Tensor, max_len: int, block: int = FLEX_BLOCK):
    """The block lists of a one-query, one-head BlockMask: row b's blocks first(b) .. last(b), all "partial".

    first(b) = start[b] // block and last(b) = (end[b] - 1) // block: every block holding a visible key, and
    no other. None is marked "full": a full block skips the mask but, in the decoding kernel, makes each
    split's tile span the whole static cache, so the splits over the unwritten tail would sit idle. Entries
    past a row's count are never read; they are clamped to a valid block number.
    """
    n_blocks = -(-max_len // block)
    first, last = start // block, (end - 1) // block
    kv_num_blocks = (last - first + 1).clamp(min=0).to(torch.int32)
    kv_indices = (first[:, None] + torch.arange(n_blocks, device=start.device)).clamp(max=n_blocks - 1)
    return rearrange(kv_num_blocks, "b -> b 1 1"), rearrange(kv_indices.to(torch.int32), "b n -> b 1 1 n")


def decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keys: VisibleKeys) -> torch.Tensor:
    """One layer's decode attention. q: (b, h, 1, d); k, v: (b, k, max_len, d), the whole static cache."""
    if keys.kernel == "triton":
        return split_kv_decode(q, k, v, keys.start, keys.end)
    if keys.kernel == "flex":
        return flex_decode(q, k, v, keys)
    if keys.kernel == "einsum":
        return grouped_einsum_decode(q, k, v, mask=keys.mask)
    from .attention import decode_attention

    return decode_attention(q, k, v, mask=keys.mask)


# ---- route 1: FlexAttention's decoding kernel -----------------------------------------------------------------
_FROM_KV_ARGS = set(inspect.signature(BlockMask.from_kv_blocks).parameters) if FLEX_AVAILABLE else set()


def flex_block_mask(keys: VisibleKeys) -> BlockMask:
    """The BlockMask of `keys`: one query, one head (broadcast to all), rows' blocks from flex_decode_blocks,
    refined inside the blocks by the rule start[b] <= slot < end[b] (a mask_mod reading the device tensors)."""
    start, end = keys.start, keys.end

    def visible(b, h, q_idx, kv_idx):
        return (kv_idx >= start[b]) & (kv_idx < end[b])

    extra = {}
    if "seq_lengths" in _FROM_KV_ARGS:
        extra["seq_lengths"] = (1, keys.max_len)
    if "compute_q_blocks" in _FROM_KV_ARGS:  # the query-side lists serve only the backward pass
        extra["compute_q_blocks"] = False
    return BlockMask.from_kv_blocks(keys.kv_num_blocks, keys.kv_indices, BLOCK_SIZE=FLEX_BLOCK, mask_mod=visible,
                                    **extra)


def _flex_decode_eager(q, k, v, kv_num_blocks, kv_indices, start, end, max_len: int):
    keys = VisibleKeys("flex", start, end, max_len, kv_num_blocks=kv_num_blocks, kv_indices=kv_indices)
    return flex_attention(q, k, v, block_mask=flex_block_mask(keys), enable_gqa=q.shape[1] != k.shape[1])


@functools.lru_cache(maxsize=None)
def _flex_decode_compiled():
    """flex_attention compiled with static shapes (the decoding template needs a static batch and head count).

    The BlockMask object is wrapped inside the compiled function from the step's tensors, so the compiled code
    takes plain tensors and is reused by every layer; its index tensors were built once per step."""
    from .recompile import allow_recompiles

    allow_recompiles(64)
    return torch.compile(_flex_decode_eager, dynamic=False, fullgraph=True)


def flex_decode(q, k, v, keys: VisibleKeys) -> torch.Tensor:
    """FlexAttention over the static cache with the step's block mask; compiled on CUDA, eager elsewhere."""
    if not FLEX_AVAILABLE:
        raise RuntimeError(f"FlexAttention needs torch >= 2.5; this is torch {torch.__version__}")
    r = q.shape[1] // k.shape[1]
    if r & (r - 1):
        raise ValueError(f"flex decode needs a power-of-two group size (query heads per KV head), got {r}")
    if keys.kv_indices is None:  # built for another kernel (or on a CPU): build the block lists now
        num, idx = flex_decode_blocks(keys.start, keys.end, keys.max_len)
        keys = VisibleKeys("flex", keys.start, keys.end, keys.max_len, kv_num_blocks=num, kv_indices=idx)
    run = _flex_decode_compiled() if q.is_cuda else _flex_decode_eager
    return run(q, k, v, keys.kv_num_blocks, keys.kv_indices, keys.start, keys.end, keys.max_len)


# ---- route 2: a split-KV kernel in Triton --------------------------------------------------------------------
BLOCK_N = 64  # keys per tile inside a split


def num_splits(batch: int, kv_heads: int, max_len: int, sms: int | None = None) -> int:
    """How many pieces each row's keys are cut into: enough blocks for about two per SM, none shorter than
    one tile. Fixed by the shapes alone, so the launch (and a CUDA graph holding it) never changes."""
    if sms is None:
        sms = torch.cuda.get_device_properties(0).multi_processor_count if torch.cuda.is_available() else 132
    wanted = -(-2 * sms // (batch * kv_heads))
    return max(1, min(wanted, -(-max_len // BLOCK_N)))


if TRITON_AVAILABLE:
    # region: split-kv-kernel
    @triton.jit
    def _partial_attention(Q, K, V, Start, End, MidO, MidLSE,
                           q_sb, q_sh, k_sb, k_sh, k_ss, v_sb, v_sh, v_ss, o_sb, o_sh, o_ss, l_sb, l_sh,
                           scale, R: tl.constexpr, BLOCK_R: tl.constexpr, D: tl.constexpr,
                           BLOCK_N: tl.constexpr, SPLITS: tl.constexpr):
        """Stage 1, one program per (row b, KV head g, split j): the r query heads of group g against split j's
        keys, an online softmax over tiles of BLOCK_N keys. Writes o_j (normalised) and lse_j per query head."""
        b, g, j = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        start, end = tl.load(Start + b), tl.load(End + b)
        # This row's split length: its own visible keys over SPLITS, rounded up to whole tiles.
        per_split = tl.cdiv(tl.cdiv(end - start, SPLITS), BLOCK_N) * BLOCK_N
        lo = start + j * per_split
        hi = tl.minimum(lo + per_split, end)

        rows = tl.arange(0, BLOCK_R)  # query heads g*R .. g*R + R - 1, padded to BLOCK_R rows for tl.dot
        dims = tl.arange(0, D)
        heads = g * R + rows
        q = tl.load(Q + b * q_sb + heads[:, None] * q_sh + dims[None, :], mask=rows[:, None] < R, other=0.0)

        m = tl.full([BLOCK_R], float("-inf"), tl.float32)  # running max of the scores
        l = tl.zeros([BLOCK_R], tl.float32)  # running sum of exp(score - m)
        acc = tl.zeros([BLOCK_R, D], tl.float32)  # running sum of exp(score - m) * v
        for tile in range(0, per_split // BLOCK_N):  # the same count for every split of the row
            n = lo + tile * BLOCK_N + tl.arange(0, BLOCK_N)
            key_ok = n < hi
            k = tl.load(K + b * k_sb + g * k_sh + n[:, None] * k_ss + dims[None, :], mask=key_ok[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k)) * scale  # (BLOCK_R, BLOCK_N) in float32
            s = tl.where(key_ok[None, :], s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, 1))  # -inf only while no visible key has been seen
            safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # keeps exp(-inf - -inf) = nan out
            alpha = tl.exp(m - safe)  # rescales what was summed under the old max (0 at the first key)
            p = tl.exp(s - safe[:, None])
            l = l * alpha + tl.sum(p, 1)
            v = tl.load(V + b * v_sb + g * v_sh + n[:, None] * v_ss + dims[None, :], mask=key_ok[:, None], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m = m_new

        has_keys = l > 0  # a split past the row's end saw no key: lse = -inf, weight 0 in the merge
        out = tl.where(has_keys[:, None], acc / tl.where(has_keys, l, 1.0)[:, None], 0.0)
        lse = tl.where(has_keys, m + tl.log(tl.where(has_keys, l, 1.0)), float("-inf"))  # log of sum exp(score)
        tl.store(MidO + b * o_sb + heads[:, None] * o_sh + j * o_ss + dims[None, :], out, mask=rows[:, None] < R)
        tl.store(MidLSE + b * l_sb + heads * l_sh + j, lse, mask=rows < R)
    # endregion

    @triton.jit
    def _merge_splits(MidO, MidLSE, Out, o_sb, o_sh, o_ss, l_sb, l_sh, out_sb, out_sh,
                      D: tl.constexpr, SPLITS: tl.constexpr, BLOCK_S: tl.constexpr):
        """Stage 2, one program per (row b, query head h): out = sum_j exp(lse_j - M) o_j / sum_j exp(lse_j - M)."""
        b, h = tl.program_id(0), tl.program_id(1)
        j = tl.arange(0, BLOCK_S)
        dims = tl.arange(0, D)
        lse = tl.load(MidLSE + b * l_sb + h * l_sh + j, mask=j < SPLITS, other=float("-inf"))
        w = tl.exp(lse - tl.max(lse, 0))  # 0 for empty splits; the row's best split gets 1
        o = tl.load(MidO + b * o_sb + h * o_sh + j[:, None] * o_ss + dims[None, :], mask=(j < SPLITS)[:, None],
                    other=0.0)
        out = tl.sum(w[:, None] * o, 0) / tl.sum(w, 0)
        tl.store(Out + b * out_sb + h * out_sh + dims, out.to(Out.dtype.element_ty))


def split_kv_decode(q, k, v, start: torch.Tensor, end: torch.Tensor, splits: int | None = None) -> torch.Tensor:
    """Split-KV decode attention with the Triton kernels. q: (b, h, 1, d); k, v: (b, k, max_len, d) with
    stride 1 along d; start, end: (b,) row b sees slots start[b] <= s < end[b] (at least one). Returns (b, h, 1, d)."""
    if not TRITON_AVAILABLE:
        raise RuntimeError("split_kv_decode needs Triton (it comes with CUDA builds of torch)")
    b, h, t, d = q.shape
    kv_heads, max_len = k.shape[1], k.shape[2]
    if t != 1 or h % kv_heads or d & (d - 1) or k.stride(-1) != 1 or v.stride(-1) != 1 or q.stride(-1) != 1:
        raise ValueError(f"split_kv_decode takes q (b, h, 1, d) and k, v (b, k, s, d) with h a multiple of k, d a "
                         f"power of two, unit stride along d; got q {tuple(q.shape)}, k {tuple(k.shape)}")
    r = h // kv_heads
    splits = splits or num_splits(b, kv_heads, max_len)
    mid_o = torch.empty(b, h, splits, d, dtype=torch.float32, device=q.device)
    mid_lse = torch.empty(b, h, splits, dtype=torch.float32, device=q.device)
    out = torch.empty(b, h, 1, d, dtype=q.dtype, device=q.device)
    if start.dtype != torch.int32 or end.dtype != torch.int32:
        start, end = start.to(torch.int32), end.to(torch.int32)
    _partial_attention[(b, kv_heads, splits)](
        q, k, v, start, end, mid_o, mid_lse,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        mid_o.stride(0), mid_o.stride(1), mid_o.stride(2), mid_lse.stride(0), mid_lse.stride(1),
        1.0 / math.sqrt(d), R=r, BLOCK_R=max(16, triton.next_power_of_2(r)), D=d, BLOCK_N=BLOCK_N, SPLITS=splits,
        num_warps=4, num_stages=2)
    _merge_splits[(b, h)](
        mid_o, mid_lse, out, mid_o.stride(0), mid_o.stride(1), mid_o.stride(2), mid_lse.stride(0),
        mid_lse.stride(1), out.stride(0), out.stride(1), D=d, SPLITS=splits,
        BLOCK_S=triton.next_power_of_2(splits), num_warps=4)
    return out


def reference_decode(q, k, v, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """The readable reference for the kernels above: grouped_einsum_decode with the dense mask of start/end."""
    return grouped_einsum_decode(q, k, v, mask=visible_keys("einsum", start, end, k.shape[2]).mask)


__all__ = ["DECODE_KERNELS", "VisibleKeys", "visible_keys", "decode", "runs_as", "flex_decode",
           "flex_decode_blocks", "flex_block_mask", "split_kv_decode", "num_splits", "reference_decode",
           "FLEX_AVAILABLE", "TRITON_AVAILABLE"]
