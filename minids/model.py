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
from .layer import DecoderLayer
from .moe import DeepSeekMoE
from .norm import RMSNorm
from .rope import RotaryEmbedding


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
        """Switch every layer between "sdpa" (fused, fast) and "einsum" (explicit, for teaching)."""
        for layer in self.layers:
            layer.self_attn.impl = impl

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def new_kv_cache(self, batch: int = 1, max_len: int | None = None) -> KVCache:
        """An empty cache on this model's device and dtype."""
        w = self.lm_head.weight
        return KVCache(self.config, batch, max_len, device=w.device, dtype=w.dtype)

    # ---- forward ----------------------------------------------------------------------------------
    def forward(
        self,
        ids: torch.Tensor,
        kv_cache: KVCache | None = None,
        *,
        last_only: bool = False,
        validate: bool = True,
    ) -> torch.Tensor:
        """Logits (b, t, vocab_size) for token ids (b, t); (b, 1, vocab_size) with last_only.

        With a kv_cache, ids are the next t tokens after the cache's `length` positions, and the cache is
        advanced by t. `validate=False` skips the id range check (it reads ids back from the device, which
        a tight decoding loop would rather not do) for callers that produced the ids themselves.
        """
        start = kv_cache.length if kv_cache is not None else 0
        self._check_ids(ids, start, kv_cache, check_values=validate)
        x = self._embed_and_run(ids, start, kv_cache)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.norm(x))

    def _embed_and_run(self, ids, start, kv_cache, need_weights=False):
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        cos, sin = self.rope(positions)  # shared by every layer
        x = self.embed_tokens(ids)  # (b, t, d_model): the residual stream
        maps = []
        for layer in self.layers:
            out = layer(x, cos, sin, kv_cache, need_weights=need_weights)
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
        """Load a transformers LlamaForCausalLM, or a folder with config.json and *.safetensors shards."""
        from .hf import load_hf

        return load_hf(cls, source, device=device, dtype=dtype)

    def save_hf(self, folder, tokenizer=None, dtype: torch.dtype | None = None):
        """Write a folder that transformers' AutoModelForCausalLM (and AutoTokenizer) load; atomic (hf.py)."""
        from .hf import save_hf

        return save_hf(self, folder, tokenizer=tokenizer, dtype=dtype)

    def to_hf_state_dict(self) -> dict[str, torch.Tensor]:
        """This model's weights under Llama-format checkpoint names (model.layers.0.self_attn.q_proj.weight...)."""
        from .hf import to_hf_state_dict

        return to_hf_state_dict(self)


def _default_device() -> torch.device:
    get = getattr(torch, "get_default_device", None)  # torch >= 2.3
    return torch.device(get()) if get is not None else torch.device("cpu")
