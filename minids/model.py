"""DeepSeekLM: token embedding, n_layers decoder layers, a final RMSNorm and an untied lm_head.

    ids (b, t) -> embed_tokens -> [DecoderLayer] x n_layers -> norm -> lm_head -> logits (b, t, vocab_size)

Module names match Llama-format checkpoints without their "model." prefix (embed_tokens, layers.{i}...,
norm, lm_head), so loading DeepSeek LLM weights is a renaming, not a conversion (see hf.py).

Building is always done on the meta device first (shapes only, no memory): the 67B's 95 layers take well
under a second. The weights are then created once, directly on the target device and dtype, and
initialised in place with the paper's N(0, 0.006). Pass device="meta" to stop before that step, and call
`materialize(device, dtype)` later.

A DeepSeekMoE config (config.is_moe) gives the same model with experts in the FFN of the later layers; after
a forward, `moe_aux_loss()` is the balance loss to add to the LM loss, `expert_load()` the tokens each
expert received, and `update_expert_bias()` V3's loss-free balancing step (train.py calls both).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .kv_cache import KVCache
from .latent_cache import LatentKVCache
from .layer import DecoderLayer
from .moe import DeepSeekMoE
from .norm import RMSNorm
from .rolling_cache import RollingKVCache
from .rope import RotaryEmbedding
from .yarn import YarnRotaryEmbedding


class DeepSeekLM(nn.Module):
    def __init__(self, config: ModelConfig, attn_impl: str = "sdpa", device=None, dtype=None) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"DeepSeekLM takes a ModelConfig, got {type(config).__name__}")
        self.config = config
        target = torch.device(device) if device is not None else _default_device()
        kw = dict(device="meta", dtype=dtype)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model, **kw)
        self.layers = nn.ModuleList(
            DecoderLayer(config, layer_idx=i, attn_impl=attn_impl, **kw) for i in range(config.n_layers)
        )
        self.norm = RMSNorm(config.d_model, config.norm_eps, **kw)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False, **kw)
        if config.is_mla:  # RoPE on the decoupled d_h^R channels only, with YaRN if the config stretches it
            self.rope = YarnRotaryEmbedding(config.rope_dim, config.rope_theta, config.max_seq_len, config.rope_scaling)
        else:
            self.rope = RotaryEmbedding(config.head_dim, config.rope_theta, config.max_seq_len)
        if target.type != "meta":
            self.materialize(target)

    # ---- weights ----------------------------------------------------------------------------------
    def materialize(self, device, dtype: torch.dtype | None = None, init: bool = True) -> "DeepSeekLM":
        """Create the weights on `device` (in `dtype`) from a meta-device model, and initialise them.

        The dtype change happens on the meta device, where it costs nothing, so the weights are allocated
        once, in their final dtype, on their final device: no CPU detour and no second copy.
        """
        if dtype is not None:
            self.to(dtype=dtype)  # on meta: changes only the recorded dtype
        self.to_empty(device=device)
        if init:
            self.init_weights()
        return self

    @torch.no_grad()
    def init_weights(self, std: float | None = None) -> None:
        """The paper's init: every matrix ~ N(0, std) with std = 0.006; RMSNorm gains = 1."""
        std = self.config.init_std if std is None else std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(mean=0.0, std=std)
            elif isinstance(module, (RMSNorm, DeepSeekMoE)):
                module.reset_parameters()

    @property
    def attn_impl(self) -> str:
        return self.layers[0].self_attn.impl

    @attn_impl.setter
    def attn_impl(self, impl: str) -> None:
        """Switch every layer between "sdpa" (fused, fast), "einsum" (explicit, for teaching) and "flex"
        (FlexAttention's block mask: skips the tiles a sliding window hides; attention.py)."""
        for layer in self.layers:
            layer.self_attn.impl = impl

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def new_kv_cache(self, batch: int = 1, max_len: int | None = None) -> KVCache | RollingKVCache:
        """An empty cache on this model's device and dtype: a KVCache, or for a model with sliding-window
        layers a RollingKVCache (each window layer keeps only its last W positions; rolling_cache.py)."""
        w = self.lm_head.weight
        kind = LatentKVCache if self.config.is_mla else RollingKVCache if self.config.windowed else KVCache
        return kind(self.config, batch, max_len, device=w.device, dtype=w.dtype)

    # ---- forward ----------------------------------------------------------------------------------
    def forward(
        self,
        ids: torch.Tensor,
        kv_cache: KVCache | None = None,
        *,
        pad: torch.Tensor | None = None,
        last_only: bool = False,
        validate: bool = True,
    ) -> torch.Tensor:
        """Logits (b, t, vocab_size) for token ids (b, t); (b, 1, vocab_size) with last_only.

        With a kv_cache, ids are the next t tokens after the cache's `length` positions, and the cache is
        advanced by t. `validate=False` skips the id range check (it reads ids back from the device, which
        a tight decoding loop would rather not do) for callers that produced the ids themselves.

        pad: for a batch of prompts of different lengths, left-padded to one length (b,) long: row b's first
        pad[b] tokens are padding. Each row then gets its own positions (its first real token is position 0)
        and no query sees a padding key, so every row's logits are those of its prompt alone (see
        `padding_mask`). With a kv_cache, pass it with the first chunk: the cache keeps it for later steps.
        """
        start = kv_cache.length if kv_cache is not None else 0
        self._check_ids(ids, start, kv_cache, check_values=validate)
        if pad is not None:
            self._check_pad(pad, ids, start)
            if kv_cache is not None:
                kv_cache.pad = pad
        elif kv_cache is not None:
            pad = kv_cache.pad  # None unless the prefill was padded
        x = self._embed_and_run(ids, start, kv_cache, pad=pad)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.norm(x))

    def _embed_and_run(self, ids, start, kv_cache, need_weights=False, pad=None):
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        mask = None
        if pad is None:
            cos, sin = self.rope(positions)  # (t, d), shared by every layer and row
        else:  # each row counts its positions from its first real token: (b, t), then (b, 1, t, d)
            cos, sin = self.rope((positions[None, :] - pad[:, None]).clamp(min=0))
            cos, sin = cos[:, None], sin[:, None]
            mask = padding_mask(pad, start, ids.shape[1])
        x = self.embed_tokens(ids)  # (b, t, d_model): the residual stream
        maps = []
        for layer in self.layers:
            out = layer(x, cos, sin, kv_cache, need_weights=need_weights, mask=mask)
            x, w = out if need_weights else (out, None)
            maps.append(w)
        if kv_cache is not None:
            kv_cache.advance(ids.shape[1])
        return (x, maps) if need_weights else x

    @torch.no_grad()
    def attention_weights(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's attention weights, each (b, n_heads, t, t), from the explicit einsum path."""
        self._check_ids(ids, 0, None, check_values=True)
        _, maps = self._embed_and_run(ids, 0, None, need_weights=True)
        return maps

    @staticmethod
    def _check_pad(pad, ids: torch.Tensor, start: int) -> None:
        if not isinstance(pad, torch.Tensor) or pad.dtype != torch.long or tuple(pad.shape) != (ids.shape[0],):
            raise ValueError(
                f"pad must be a torch.long tensor of shape (batch,) = ({ids.shape[0]},) counting each row's "
                f"left-padding tokens, got {pad!r}")
        if start != 0:
            raise ValueError("pad goes with the first chunk of a sequence (the prefill), not at position "
                             f"{start}: the cache keeps it for the later steps")
        lo, hi = int(pad.min()), int(pad.max())
        if lo < 0 or hi >= ids.shape[1]:
            raise ValueError(f"pad must lie in [0, {ids.shape[1]}) (every row keeps at least one real token), "
                             f"got min {lo}, max {hi}")

    # ---- DeepSeekMoE (moe.py) -------------------------------------------------------------------------
    def moe_layers(self) -> list[DeepSeekMoE]:
        """The MoE blocks, in layer order (empty for a dense model)."""
        return [layer.mlp for layer in self.layers if isinstance(layer.mlp, DeepSeekMoE)]

    def moe_aux_loss(self) -> torch.Tensor:
        """The balance loss of the last forward, alpha_1 * sum_i f_i P_i summed over the MoE layers: add it to
        the LM loss before backward. A zero tensor for a dense model or before any forward."""
        losses = [m.aux_loss for m in self.moe_layers() if m.aux_loss is not None]
        return torch.stack(losses).sum() if losses else torch.zeros((), device=self.lm_head.weight.device)

    def expert_load(self) -> torch.Tensor:
        """(n_moe_layers, n_routed_experts): tokens each routed expert received in the last forward."""
        loads = [m.load for m in self.moe_layers()]
        if not loads or any(load is None for load in loads):
            raise RuntimeError("expert_load() needs a forward pass of an MoE model first")
        return torch.stack(loads)

    def update_expert_bias(self) -> None:
        """V3's loss-free balancing: after an optimizer step, move each layer's selection bias (no-op if off)."""
        for m in self.moe_layers():
            m.update_bias()

    def _check_ids(self, ids, start: int, kv_cache: KVCache | None, check_values: bool) -> None:
        cfg = self.config
        if not isinstance(ids, torch.Tensor):
            raise TypeError(f"token ids must be a torch.Tensor of shape (batch, seq), got {type(ids).__name__}")
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise TypeError(f"token ids must be an integer tensor (torch.long), got {ids.dtype}")
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise ValueError(f"token ids must have shape (batch, seq) with seq >= 1, got {tuple(ids.shape)}")
        t = ids.shape[1]
        if start + t > cfg.max_seq_len:
            raise ValueError(
                f"sequence too long: positions {start}..{start + t - 1} but max_seq_len is {cfg.max_seq_len}"
            )
        if kv_cache is not None:
            if kv_cache.batch != ids.shape[0]:
                raise ValueError(f"KV cache was made for batch {kv_cache.batch}, ids have batch {ids.shape[0]}")
            kv_cache.check_room(t)
        if check_values:
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= cfg.vocab_size:
                raise ValueError(
                    f"token ids must lie in [0, vocab_size) = [0, {cfg.vocab_size}); got min {lo}, max {hi}"
                )

    # ---- Hugging Face checkpoints (hf.py) -----------------------------------------------------------
    @classmethod
    def from_hf(cls, source, device="cpu", dtype: torch.dtype | None = None) -> "DeepSeekLM":
        """Load a transformers LlamaForCausalLM (or MistralForCausalLM / MinistralForCausalLM: the same weight
        names plus a sliding window), or a folder with config.json and *.safetensors shards."""
        from .hf import load_hf

        return load_hf(cls, source, device=device, dtype=dtype)

    def save_hf(self, folder, tokenizer=None, dtype: torch.dtype | str | None = None, overwrite: bool = False):
        """Write a folder that transformers' AutoModelForCausalLM (and AutoTokenizer) load; atomic (hf.py).
        An existing folder is replaced only if it is a model folder, unless overwrite=True."""
        from .hf import save_hf

        return save_hf(self, folder, tokenizer=tokenizer, dtype=dtype, overwrite=overwrite)

    def to_hf_state_dict(self) -> dict[str, torch.Tensor]:
        """This model's weights under Llama-format checkpoint names (model.layers.0.self_attn.q_proj.weight...)."""
        from .hf import to_hf_state_dict

        return to_hf_state_dict(self)


def padding_mask(pad: torch.Tensor, start: int, t: int, total: int | None = None) -> torch.Tensor:
    """Boolean (b, 1, t, s) mask for left-padded rows: True where query i (slot start + i) may see key slot j.

    A key is visible when it is not in the future (j <= start + i) and not padding (j >= pad[b]): the causal
    mask with the padding columns removed, row by row. A padding query itself sees only its own slot: its
    output is never used, but a row of -inf everywhere would make its softmax NaN. s = start + t keys, or
    `total` for a fixed-size buffer (the static decode step).
    """
    s = start + t if total is None else total
    query = torch.arange(start, start + t, device=pad.device)[None, :, None]  # (1, t, 1) slots
    key = torch.arange(s, device=pad.device)[None, None, :]  # (1, 1, s)
    first = pad[:, None, None]  # (b, 1, 1): first real slot of each row
    visible = (key <= query) & (key >= first)
    visible |= (query < first) & (key == query)  # padding queries: themselves only
    return visible[:, None]  # (b, 1, t, s): one mask for every head


def _default_device() -> torch.device:
    get = getattr(torch, "get_default_device", None)  # torch >= 2.3
    return torch.device(get()) if get is not None else torch.device("cpu")
