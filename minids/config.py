"""ModelConfig: the shape of a DeepSeek LLM, in the paper's symbols.

| paper / minids | Hugging Face config.json    |
|----------------|-----------------------------|
| vocab_size     | vocab_size                  |
| d_model        | hidden_size                 |
| n_layers       | num_hidden_layers           |
| n_heads        | num_attention_heads         |
| n_kv_heads     | num_key_value_heads         |
| d_ff           | intermediate_size           |
| max_seq_len    | max_position_embeddings     |
| rope_theta     | rope_theta                  |
| norm_eps       | rms_norm_eps                |
| sliding_window | sliding_window (Mistral)    |
| layer_types    | layer_types (Ministral)     |

Sliding windows (not in DeepSeek LLM; chapter 12): `sliding_window` W limits every layer's attention to the
last W positions, `layer_types` mixes windowed ("sliding_attention") and full ("full_attention") layers.
A windowed config is written and read as a Mistral config (a mixed one as Ministral's, which has the field).

DeepSeekMoE (arXiv 2401.06066; deepseek-moe-16b's config.json, model_type "deepseek"); all 0/None = dense:

| minids                | config.json           | meaning                                                   |
|-----------------------|-----------------------|-----------------------------------------------------------|
| n_routed_experts      | n_routed_experts      | N' fine-grained experts the router chooses from           |
| n_shared_experts      | n_shared_experts      | K_s always-on experts (stored as one SwiGLU K_s x wider)  |
| n_experts_per_token   | num_experts_per_tok   | K' routed experts per token (top-k)                       |
| moe_d_ff              | moe_intermediate_size | width of one expert (d_ff stays the dense layers' width)  |
| first_dense_layers    | first_k_dense_replace | the first layers keep a dense FFN of width d_ff           |
| router_scoring        | scoring_func          | "softmax" (DeepSeekMoE, V2) or "sigmoid" (V3)             |
| norm_topk_prob        | norm_topk_prob        | renormalise the k chosen gates to sum to 1                |
| routed_scaling        | routed_scaling_factor | gates x this factor (1.0; V3 uses 2.5)                    |
| aux_loss_alpha        | aux_loss_alpha        | alpha_1 of the expert-level balance loss                  |
| aux_loss_per_sequence | seq_aux               | f_i and P_i per sequence, then averaged (the 16B: true)   |
| bias_update_speed     | (none)                | V3's gamma: loss-free balancing by a selection bias; 0=off|

Multi-head latent attention and the DeepSeek-V2/V3 family (arXiv 2405.04434, 2412.19437; mla.py); all None =
DeepSeek LLM's GQA. Names are the HF config's, the papers' symbols beside them:

| minids / config.json | paper | meaning                                                               |
|----------------------|-------|-----------------------------------------------------------------------|
| kv_lora_rank         | d_c   | width of the latent c_KV that is cached instead of keys and values    |
| q_lora_rank          | d_c'  | width of the query latent c_Q (None: one q_proj, as V2-Lite)          |
| qk_nope_head_dim     | d_h   | per-head key/query channels without position (decompressed from c_KV)|
| qk_rope_head_dim     | d_h^R | the decoupled RoPE key k_R, shared by all heads, and each q_R         |
| v_head_dim           |       | per-head value channels                                               |
| rope_interleave      |       | RoPE pairs (2i, 2i+1) as DeepSeek's checkpoints store them            |
| rope_scaling         |       | YaRN (yarn.Yarn), as V2/V3 configs set it                             |
| topk_method          |       | "greedy", V2's "group_limited_greedy", V3's "noaux_tc"                |
| n_group, topk_group  |       | experts in n_group groups; each token chooses within topk_group of them|

An MLA config is written and read as model_type "deepseek_v3" when its router scores by sigmoid (or it has no
experts) and "deepseek_v2" when by softmax.

The presets are the paper's Table 2 (arXiv 2401.02954) and the published config.json files of
deepseek-ai/deepseek-llm-7b-base and deepseek-llm-67b-base, plus Llama-2-70B (the peer that spent a
similar budget on FFN width) and two small shapes that run on a laptop CPU.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

from .yarn import Yarn

# transformers' names for the two kinds of layer (MinistralConfig.layer_types, Gemma's, Qwen2's).
SLIDING, FULL = "sliding_attention", "full_attention"
LAYER_TYPES = (SLIDING, FULL)
# The model types from_hf maps, and what each adds to the Llama layout.
HF_MODEL_TYPES = {
    "llama": "Llama-format, as DeepSeek LLM uses",
    "deepseek": "DeepSeekMoE, as deepseek-moe-16b uses",
    "mistral": "Llama plus sliding_window in every layer",
    "ministral": "Mistral plus a per-layer layer_types pattern",
    "deepseek_v2": "multi-head latent attention and V2's softmax router (DeepSeek-V2, V2-Lite)",
    "deepseek_v3": "multi-head latent attention and V3's sigmoid router (DeepSeek-V3)",
}
TOPK_METHODS = ("greedy", "group_limited_greedy", "noaux_tc")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    max_seq_len: int = 4096
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    init_std: float = 0.006  # the paper initialises every weight matrix with std 0.006
    # DeepSeekMoE (moe.py); the defaults mean a dense model. See the table in the module docstring.
    n_routed_experts: int = 0
    n_shared_experts: int = 0
    n_experts_per_token: int = 0
    moe_d_ff: int | None = None
    first_dense_layers: int = 0
    router_scoring: str = "softmax"
    norm_topk_prob: bool = False
    routed_scaling: float = 1.0
    aux_loss_alpha: float = 0.0
    aux_loss_per_sequence: bool = False
    bias_update_speed: float = 0.0
    # Sliding-window attention (chapter 12); the defaults are DeepSeek LLM's full causal attention.
    sliding_window: int | None = None  # W: a query sees the W keys up to and including itself
    layer_types: tuple[str, ...] | None = None  # per layer "sliding_attention" / "full_attention"
    # Multi-head latent attention (mla.py) and V2/V3 routing; the defaults are DeepSeek LLM's GQA and greedy top-k.
    kv_lora_rank: int | None = None  # d_c
    q_lora_rank: int | None = None  # d_c' (None: queries straight from h, as V2-Lite)
    qk_nope_head_dim: int | None = None  # d_h
    qk_rope_head_dim: int | None = None  # d_h^R
    v_head_dim: int | None = None
    rope_interleave: bool = False
    rope_scaling: Yarn | None = None
    topk_method: str = "greedy"
    n_group: int | None = None
    topk_group: int | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "max_seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"ModelConfig.{name} must be an int, got {value!r} ({type(value).__name__})")
            if value <= 0:
                raise ValueError(f"ModelConfig.{name} must be positive, got {value}")
        for name in ("rope_theta", "norm_eps", "init_std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"ModelConfig.{name} must be a positive number, got {value!r}")
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(
                f"ModelConfig: n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads}), "
                "so that every key/value head serves the same number of query heads"
            )
        if isinstance(self.rope_scaling, Mapping):  # to_dict() gives it back as a dict
            object.__setattr__(self, "rope_scaling", Yarn(**self.rope_scaling))
        self._check_mla()
        if self.is_mla:  # head_dim = d_model / n_heads plays no part in MLA
            self._check_moe()
            self._check_routing()
            self._check_window()
            return
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"ModelConfig: d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}), "
                "so that every head gets head_dim = d_model / n_heads channels"
            )
        if self.head_dim % 2 != 0:
            raise ValueError(
                f"ModelConfig: head_dim = d_model / n_heads = {self.head_dim} must be even, "
                "because RoPE rotates channels in pairs"
            )
        self._check_moe()
        self._check_routing()
        self._check_window()

    def _check_mla(self) -> None:
        """MLA's fields: all None (GQA), or a complete latent-attention shape."""
        names = ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
        extras = {"q_lora_rank": None, "rope_interleave": False, "rope_scaling": None}
        if self.kv_lora_rank is None:
            given = [f"{n}={getattr(self, n)!r}" for n in names[1:] if getattr(self, n) is not None]
            given += [f"{n}={getattr(self, n)!r}" for n, d in extras.items() if getattr(self, n) != d]
            if given:
                raise ValueError(f"ModelConfig: {', '.join(given)} given but kv_lora_rank is None (GQA); set "
                                 "kv_lora_rank (d_c) for multi-head latent attention, or leave these at their defaults")
            return
        for name in names + ("q_lora_rank",):
            value = getattr(self, name)
            if name == "q_lora_rank" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive int for multi-head latent attention "
                                 f"(kv_lora_rank is set), got {value!r}")
        if self.qk_rope_head_dim % 2:
            raise ValueError(f"ModelConfig.qk_rope_head_dim ({self.qk_rope_head_dim}) must be even: RoPE rotates "
                             "channels in pairs")
        if self.n_kv_heads != self.n_heads:
            raise ValueError(f"ModelConfig: multi-head latent attention has no key/value heads to share (every head "
                             f"decompresses its own from c_KV), so n_kv_heads must equal n_heads ({self.n_heads}), "
                             f"got {self.n_kv_heads}")
        if not isinstance(self.rope_interleave, bool):
            raise TypeError(f"ModelConfig.rope_interleave must be True or False, got {self.rope_interleave!r}")
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, Yarn):
            raise TypeError(f"ModelConfig.rope_scaling must be None or a minids.yarn.Yarn, got {self.rope_scaling!r}")
        if self.sliding_window is not None:
            raise ValueError("ModelConfig: a sliding window with multi-head latent attention is not implemented")

    def _check_routing(self) -> None:
        """topk_method, n_group, topk_group: V2's group-limited greedy and V3's noaux_tc (mla configs only)."""
        if self.topk_method not in TOPK_METHODS:
            raise ValueError(f"ModelConfig.topk_method must be one of {TOPK_METHODS}, got {self.topk_method!r}")
        for name in ("n_group", "topk_group"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"ModelConfig.{name} must be None or an int >= 1, got {value!r}")
        special = self.topk_method != "greedy" or self.n_group not in (None, 1) or self.topk_group not in (None, 1)
        if not special:
            return
        if not (self.is_mla and self.is_moe):
            raise ValueError(f"ModelConfig: topk_method={self.topk_method!r}, n_group={self.n_group!r}, "
                             f"topk_group={self.topk_group!r} is V2/V3 routing, which minids builds only with "
                             "multi-head latent attention (kv_lora_rank set) and experts (n_routed_experts > 0)")
        want = {"group_limited_greedy": "softmax", "noaux_tc": "sigmoid"}.get(self.topk_method)
        if want is not None and self.router_scoring != want:
            raise ValueError(f"ModelConfig: topk_method {self.topk_method!r} goes with router_scoring {want!r}, "
                             f"got {self.router_scoring!r}")
        if self.topk_method == "greedy":
            raise ValueError(f"ModelConfig: n_group={self.n_group} / topk_group={self.topk_group} need a "
                             "group-limited topk_method ('group_limited_greedy' or 'noaux_tc')")
        g, tg, E = self.n_group or 1, self.topk_group or 1, self.n_routed_experts
        if E % g:
            raise ValueError(f"ModelConfig: n_routed_experts ({E}) must be a multiple of n_group ({g})")
        if not 1 <= tg <= g:
            raise ValueError(f"ModelConfig: topk_group ({tg}) must be between 1 and n_group ({g})")
        if tg * (E // g) < self.n_experts_per_token:
            raise ValueError(f"ModelConfig: topk_group ({tg}) groups of {E // g} experts hold fewer than "
                             f"n_experts_per_token ({self.n_experts_per_token}) experts")
        if self.topk_method == "noaux_tc" and E // g < 2:
            raise ValueError(f"ModelConfig: noaux_tc scores a group by its two best experts, so each of the "
                             f"n_group ({g}) groups needs >= 2 of the {E} experts")

    def _check_moe(self) -> None:
        """The MoE fields: all at their defaults (dense), or a complete, consistent DeepSeekMoE."""
        for name in ("n_routed_experts", "n_shared_experts", "n_experts_per_token", "first_dense_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"ModelConfig.{name} must be an int >= 0, got {value!r}")
        for name in ("norm_topk_prob", "aux_loss_per_sequence"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"ModelConfig.{name} must be True or False, got {getattr(self, name)!r}")
        for name, low in (("routed_scaling", "positive"), ("aux_loss_alpha", ">= 0"), ("bias_update_speed", ">= 0")):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
                value > 0 if low == "positive" else value >= 0)
            if not ok:
                raise ValueError(f"ModelConfig.{name} must be a number {low}, got {value!r}")
        if self.router_scoring not in ("softmax", "sigmoid"):
            raise ValueError(f"ModelConfig.router_scoring must be 'softmax' (DeepSeekMoE) or 'sigmoid' (V3), "
                             f"got {self.router_scoring!r}")
        if not self.is_moe:
            given = [f"{n}={getattr(self, n)!r}" for n in ("n_shared_experts", "n_experts_per_token", "moe_d_ff",
                                                          "first_dense_layers") if getattr(self, n)]
            if given:
                raise ValueError(f"ModelConfig: {', '.join(given)} given but n_routed_experts is 0 (a dense model); "
                                 "set n_routed_experts > 0 for DeepSeekMoE, or leave the MoE fields at their defaults")
            return
        if not 1 <= self.n_experts_per_token <= self.n_routed_experts:
            raise ValueError(f"ModelConfig: n_experts_per_token ({self.n_experts_per_token}) must be between 1 and "
                             f"n_routed_experts ({self.n_routed_experts}): each token picks its top-k routed experts")
        if isinstance(self.moe_d_ff, bool) or not isinstance(self.moe_d_ff, int) or self.moe_d_ff <= 0:
            raise ValueError(f"ModelConfig: an MoE model needs moe_d_ff, the width of one expert (a positive int), "
                             f"got {self.moe_d_ff!r}")
        if self.first_dense_layers >= self.n_layers:
            raise ValueError(f"ModelConfig: first_dense_layers ({self.first_dense_layers}) must be below n_layers "
                             f"({self.n_layers}), or no layer would use the experts")

    def _check_window(self) -> None:
        w = self.sliding_window
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise ValueError(
                f"ModelConfig.sliding_window must be None (full causal attention) or an int >= 1 (the keys a "
                f"query sees, itself included), got {w!r}"
            )
        types = self.layer_types
        if types is None:
            return
        if isinstance(types, str) or not isinstance(types, (tuple, list)):
            raise TypeError(
                f"ModelConfig.layer_types must be None or a sequence of {LAYER_TYPES} per layer, got {types!r}"
            )
        types = tuple(types)
        if len(types) != self.n_layers:
            raise ValueError(
                f"ModelConfig.layer_types has {len(types)} entries but n_layers is {self.n_layers}; "
                "give one type per layer"
            )
        bad = sorted({t for t in types if t not in LAYER_TYPES}, key=str)
        if bad:
            raise ValueError(f"ModelConfig.layer_types: {bad} not allowed; each entry must be one of {LAYER_TYPES}")
        if w is None and SLIDING in types:
            raise ValueError(
                "ModelConfig.layer_types has sliding_attention layers but sliding_window is None; "
                "set sliding_window (W) or make every layer full_attention"
            )
        if w is not None and SLIDING not in types:
            raise ValueError(
                f"ModelConfig: sliding_window={w} but layer_types has no sliding_attention layer, so no layer "
                "would use it; set sliding_window=None for full attention everywhere"
            )
        # Every layer windowed is what sliding_window alone means: one spelling, so that configs compare equal.
        object.__setattr__(self, "layer_types", None if all(t == SLIDING for t in types) else types)

    # ---- derived sizes -------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        """Channels per attention head (128 in both DeepSeek LLM models)."""
        return self.d_model // self.n_heads

    @property
    def n_rep(self) -> int:
        """Query heads that share one key/value head (1 = MHA, n_heads = MQA, else GQA)."""
        return self.n_heads // self.n_kv_heads

    @property
    def is_mla(self) -> bool:
        """True for multi-head latent attention (kv_lora_rank set): DeepSeek-V2/V3's attention."""
        return self.kv_lora_rank is not None

    @property
    def qk_head_dim(self) -> int:
        """Channels of a query or key head: head_dim for GQA; d_h + d_h^R for MLA (192 in V2 and V3)."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim if self.is_mla else self.head_dim

    @property
    def rope_dim(self) -> int:
        """Channels RoPE rotates per head: all of head_dim for GQA, the decoupled d_h^R for MLA."""
        return self.qk_rope_head_dim if self.is_mla else self.head_dim

    @property
    def hf_model_type(self) -> str:
        """The transformers model_type that has this architecture (to_hf_dict writes it)."""
        if self.is_mla:
            return "deepseek_v2" if self.is_moe and self.router_scoring == "softmax" else "deepseek_v3"
        if self.sliding_window is not None:
            return "mistral" if self.layer_types is None else "ministral"
        return "deepseek" if self.is_moe else "llama"

    @property
    def attention_kind(self) -> str:
        if self.is_mla:
            return f"MLA (d_c {self.kv_lora_rank} + d_h^R {self.qk_rope_head_dim})"
        if self.n_kv_heads == self.n_heads:
            return "MHA"
        if self.n_kv_heads == 1:
            return "MQA"
        return f"GQA {self.n_rep}:1"

    @property
    def is_moe(self) -> bool:
        """True for a DeepSeekMoE model (n_routed_experts > 0)."""
        return self.n_routed_experts > 0

    def is_moe_layer(self, layer_idx: int) -> bool:
        """Whether layer `layer_idx` uses the experts: every layer past the first `first_dense_layers`."""
        return self.is_moe and layer_idx >= self.first_dense_layers

    @property
    def n_moe_layers(self) -> int:
        return self.n_layers - self.first_dense_layers if self.is_moe else 0

    def __repr__(self) -> str:
        # The MoE and window fields only where they differ from their defaults, so a dense config with full
        # attention reads as it always has.
        shown = (f for f in fields(self) if f.name not in _OPTIONAL_FIELDS or getattr(self, f.name) != f.default)
        return f"ModelConfig({', '.join(f'{f.name}={getattr(self, f.name)!r}' for f in shown)})"

    def layer_window(self, layer: int) -> int | None:
        """The window W of layer `layer` (0-based), or None where it attends to every earlier position.

        Convention (transformers' Mistral and Ministral): a query at position q sees the keys at positions
        q - W + 1 .. q, W keys including itself; the mask hides kv > q and kv <= q - W. One layer therefore
        moves information at most W - 1 positions, and L windowed layers at most L * (W - 1). The Mistral
        paper (arXiv 2310.06825) and FlexAttention's sliding-window example (`q - kv <= W`) count W + 1 keys,
        so their W is one less than this one for the same band: their "L x W" reach is this L * (W - 1).
        """
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise IndexError(f"ModelConfig.layer_window: layer must be an int in [0, {self.n_layers}), got {layer!r}")
        if self.sliding_window is None:
            return None
        if self.layer_types is None or self.layer_types[layer] == SLIDING:
            return self.sliding_window
        return None

    @property
    def windowed(self) -> bool:
        """True if at least one layer attends through a sliding window."""
        return any(self.layer_window(i) is not None for i in range(self.n_layers))

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict that `ModelConfig(**d)` rebuilds. The multi-head latent attention and V2/V3 routing
        fields are left out while they hold their defaults, so that a results file written before those fields
        existed still compares equal to the same config now (experiments resume and merge by that comparison)."""
        d = asdict(self)
        defaults = {f.name: f.default for f in fields(self)}
        return {k: v for k, v in d.items() if not (k in _MLA_FIELDS and v == defaults[k])}

    # ---- presets -------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> "ModelConfig":
        """One of `ModelConfig.preset_names()`, e.g. "deepseek-llm-67b"."""
        if name not in PRESETS:
            raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**PRESETS[name])

    @staticmethod
    def preset_names() -> list[str]:
        return list(PRESETS)

    # ---- Hugging Face configs ------------------------------------------------------------------
    @classmethod
    def from_hf(cls, source: Any) -> "ModelConfig":
        """Read a Llama-layout transformers config: a config object, a dict, a config.json path or its folder.

        model_type "llama" (DeepSeek LLM), "deepseek" (DeepSeekMoE), "deepseek_v2" / "deepseek_v3" (MLA; see
        _mla_fields_from_hf for what is refused), "mistral" (Llama plus sliding_window on
        every layer) or "ministral" (Mistral plus a layer_types pattern). Anything minids does not implement
        (biases, RoPE scaling, tied embeddings, another activation, a head_dim that is not d_model / n_heads,
        a layer type other than sliding_attention / full_attention) raises instead of being silently ignored.
        """
        hf = _hf_config_as_dict(source)
        model_type = hf.get("model_type")
        if model_type in ("deepseek_v2", "deepseek_v3"):
            return cls(**_mla_fields_from_hf(hf, model_type))
        if model_type is not None and model_type not in HF_MODEL_TYPES:
            raise ValueError(
                f"ModelConfig.from_hf: model_type {model_type!r} is not supported; minids maps "
                + "; ".join(f"{k!r} ({v})" for k, v in HF_MODEL_TYPES.items())
            )
        _refuse_moe_fields_outside_deepseek(hf, model_type)
        required = {
            "vocab_size": "vocab_size",
            "hidden_size": "d_model",
            "num_hidden_layers": "n_layers",
            "num_attention_heads": "n_heads",
            "intermediate_size": "d_ff",
        }
        _require_common(hf, required, "the config", "DeepSeek LLM")
        rope_theta = hf.get("rope_theta")
        rope_params = hf.get("rope_parameters") or {}
        if isinstance(rope_params, Mapping):  # transformers >= 5 keeps rope_theta in here
            rope_theta = rope_params.get("rope_theta", rope_theta)
            rope_type = rope_params.get("rope_type", "default")
            if rope_type not in ("default", None):
                raise ValueError(f"ModelConfig.from_hf: rope_type {rope_type!r} is not supported, only 'default'")
        scaling = hf.get("rope_scaling")
        if scaling is not None and not isinstance(scaling, Mapping):
            raise ValueError(f"ModelConfig.from_hf: rope_scaling must be null or an object like "
                             f'{{"rope_type": "linear", "factor": 2.0}}, got {scaling!r}; minids supports none')
        if scaling and scaling.get("rope_type", scaling.get("type")) not in ("default", None):
            raise ValueError(f"ModelConfig.from_hf: rope_scaling {scaling!r} is not supported, only none")
        n_heads = hf["num_attention_heads"]
        head_dim = hf.get("head_dim")
        if head_dim is not None and head_dim * n_heads != hf["hidden_size"]:
            raise ValueError(
                f"ModelConfig.from_hf: head_dim {head_dim} x num_attention_heads {n_heads} != hidden_size "
                f"{hf['hidden_size']}; minids derives head_dim = d_model / n_heads"
            )
        sliding_window, layer_types = _hf_window(hf, model_type or "llama")
        return cls(
            vocab_size=hf["vocab_size"],
            d_model=hf["hidden_size"],
            n_layers=hf["num_hidden_layers"],
            n_heads=n_heads,
            n_kv_heads=hf.get("num_key_value_heads") or n_heads,
            d_ff=hf["intermediate_size"],
            max_seq_len=hf.get("max_position_embeddings") or 4096,
            rope_theta=float(rope_theta if rope_theta is not None else 10000.0),
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            init_std=float(hf.get("initializer_range") or 0.006),
            **(_moe_fields_from_hf(hf) if model_type == "deepseek" else {}),
            sliding_window=sliding_window,
            layer_types=layer_types,
        )

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json fields of the equivalent transformers config.

        LlamaConfig for DeepSeek LLM, deepseek-moe's config (model_type "deepseek") for DeepSeekMoE,
        MistralConfig when every layer is windowed, and MinistralConfig (the Mistral layout with layer_types)
        for a pattern of windowed and full layers.
        """
        if self.is_mla:
            return _mla_to_hf(self)
        hf: dict[str, Any] = {
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "vocab_size": self.vocab_size,
            "hidden_size": self.d_model,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "intermediate_size": self.d_ff,
            "max_position_embeddings": self.max_seq_len,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.norm_eps,
            "initializer_range": self.init_std,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "attention_bias": False,
            "mlp_bias": False,
            **(_moe_fields_to_hf(self) if self.is_moe else {}),
        }
        if self.sliding_window is None:
            return hf
        if self.is_moe:
            raise ValueError("ModelConfig.to_hf_dict: no transformers config has both DeepSeekMoE experts (model_type "
                             "'deepseek') and a sliding window (Mistral's); this config sets both")
        hf.update(head_dim=self.head_dim, sliding_window=self.sliding_window)
        if self.layer_types is None:
            hf.update(model_type="mistral", architectures=["MistralForCausalLM"])
        else:
            hf.update(model_type="ministral", architectures=["MinistralForCausalLM"],
                      layer_types=list(self.layer_types))
        return hf


def _hf_window(hf: Mapping[str, Any], model_type: str) -> tuple[int | None, tuple[str, ...] | None]:
    """(sliding_window, layer_types) as transformers' model class for `model_type` would apply them."""
    window, types = hf.get("sliding_window"), hf.get("layer_types")
    if model_type in ("llama", "deepseek"):
        if window is not None or types is not None:
            raise ValueError(
                f"ModelConfig.from_hf: a {model_type!r} config with sliding_window={window!r} / layer_types: "
                "its model class ignores both, so the checkpoint's meaning is unclear; use model_type "
                "'mistral' (every layer windowed) or 'ministral' (a per-layer pattern)"
            )
        return None, None
    if model_type == "mistral" and types is not None:
        # MistralForCausalLM ignores layer_types (it warns): every layer uses sliding_window. Accept the field
        # only when it says the same, so that a pattern that would be dropped is never mistaken for honoured.
        meant = SLIDING if window is not None else FULL
        if any(t != meant for t in types):
            raise ValueError(
                f"ModelConfig.from_hf: a 'mistral' config with layer_types {list(types)}: MistralForCausalLM "
                f"ignores them and uses {meant} in every layer; use model_type 'ministral' for a pattern"
            )
        types = None
    if types is not None:
        types = tuple(types)
        bad = sorted({t for t in types if t not in LAYER_TYPES}, key=str)
        if bad:
            raise ValueError(
                f"ModelConfig.from_hf: layer_types {bad} are not supported; minids has {LAYER_TYPES}"
            )
        if window is None:
            types = None if all(t == FULL for t in types) else types
            if types is not None:
                raise ValueError(
                    "ModelConfig.from_hf: layer_types has sliding_attention layers but sliding_window is null")
        elif all(t == FULL for t in types):  # a window no layer uses
            window, types = None, None
    return window, types


def _refuse_moe_fields_outside_deepseek(hf: Mapping[str, Any], model_type: str | None) -> None:
    """A config that sets experts but names a dense model_type (or none): LlamaConfig keeps the unknown keys and
    builds a dense model (transformers says nothing), so minids refuses rather than guess which one was meant."""
    if model_type in (None, "llama", "mistral", "ministral") and hf.get("n_routed_experts"):
        raise ValueError(
            f"ModelConfig.from_hf: the config sets n_routed_experts={hf['n_routed_experts']!r} but its model_type "
            f"is {model_type!r}, whose model class is dense and ignores the experts; set model_type 'deepseek' "
            "for a DeepSeekMoE model, or remove the MoE fields for a dense one")


def _require(hf: Mapping[str, Any], key: str, allowed: tuple, why: str) -> None:
    if key in hf and hf[key] not in allowed:
        raise ValueError(f"ModelConfig.from_hf: {key}={hf[key]!r} is not supported ({why}); allowed: {allowed}")


def _require_common(hf: Mapping[str, Any], required, what: str, family: str) -> None:
    """What every config minids reads must have and must not have: the `required` keys present, SiLU, an
    untied lm_head, no biases. `what` names the config and `family` the models in the messages."""
    missing = [k for k in required if hf.get(k) is None]
    if missing:
        raise ValueError(f"ModelConfig.from_hf: {what} lacks {', '.join(missing)}")
    _require(hf, "hidden_act", ("silu",), "SwiGLU uses the SiLU gate")
    _require(hf, "tie_word_embeddings", (False,), f"{family} keeps lm_head untied")
    _require(hf, "attention_bias", (False, None), "the projections have no bias")
    _require(hf, "mlp_bias", (False, None), "the FFN has no bias")


def _moe_fields_from_hf(hf: Mapping[str, Any]) -> dict[str, Any]:
    """The DeepSeekMoE fields of a model_type "deepseek" config.json (deepseek-moe-16b's), or {} if dense.

    DeepSeek's own modeling code makes layer i an MoE layer when n_routed_experts is set, i >=
    first_k_dense_replace and i % moe_layer_freq == 0; minids implements moe_layer_freq 1 only.
    """
    if not hf.get("n_routed_experts"):
        return {}
    _require(hf, "moe_layer_freq", (1, None), "minids puts experts in every layer past first_k_dense_replace")
    _require(hf, "topk_method", ("greedy", None), "minids routes greedily, without group-limited routing")
    for key in ("n_group", "topk_group"):
        _require(hf, key, (1, None), "group-limited (device-limited) routing is not implemented")
    _require(hf, "ep_size", (1, None), "minids keeps all experts in one process")
    missing = [k for k in ("num_experts_per_tok", "moe_intermediate_size") if hf.get(k) is None]
    if missing:
        raise ValueError(f"ModelConfig.from_hf: an MoE config (n_routed_experts set) lacks {', '.join(missing)}")
    return dict(
        n_routed_experts=hf["n_routed_experts"],
        n_shared_experts=hf.get("n_shared_experts") or 0,
        n_experts_per_token=hf["num_experts_per_tok"],
        moe_d_ff=hf["moe_intermediate_size"],
        first_dense_layers=hf.get("first_k_dense_replace") or 0,
        router_scoring=hf.get("scoring_func") or "softmax",
        norm_topk_prob=bool(hf.get("norm_topk_prob", False)),
        routed_scaling=float(hf.get("routed_scaling_factor") or 1.0),
        aux_loss_alpha=float(hf.get("aux_loss_alpha") or 0.0),
        aux_loss_per_sequence=bool(hf.get("seq_aux", False)),
    )


def _moe_fields_to_hf(config: "ModelConfig") -> dict[str, Any]:
    """The fields deepseek-moe-16b's config.json uses (model_type "deepseek", DeepseekForCausalLM)."""
    unsaid = {"router_scoring": config.router_scoring != "softmax", "routed_scaling": config.routed_scaling != 1.0,
              "bias_update_speed": config.bias_update_speed != 0}
    if any(unsaid.values()):
        raise ValueError(
            "ModelConfig.to_hf_dict: deepseek-moe's config.json (model_type 'deepseek') can express only softmax "
            "scoring, routed_scaling 1.0 and no selection bias; this config sets "
            + ", ".join(f"{k}={getattr(config, k)!r}" for k, bad in unsaid.items() if bad))
    return {
        "model_type": "deepseek",
        "architectures": ["DeepseekForCausalLM"],
        "n_routed_experts": config.n_routed_experts,
        "n_shared_experts": config.n_shared_experts,
        "num_experts_per_tok": config.n_experts_per_token,
        "moe_intermediate_size": config.moe_d_ff,
        "first_k_dense_replace": config.first_dense_layers,
        "moe_layer_freq": 1,
        "scoring_func": config.router_scoring,
        "norm_topk_prob": config.norm_topk_prob,
        "aux_loss_alpha": config.aux_loss_alpha,
        "seq_aux": config.aux_loss_per_sequence,
    }


def _mla_fields_from_hf(hf: Mapping[str, Any], model_type: str) -> dict[str, Any]:
    """ModelConfig fields of a DeepSeek-V2 / V3 config (model_type "deepseek_v2" / "deepseek_v3"), read as
    transformers' DeepseekV2ForCausalLM / DeepseekV3ForCausalLM would build the model.

    Refused, with the reason: an FP8 block-quantized checkpoint's config (`quantization_config`: DeepSeek
    publishes V3 in FP8 with a 128 x 128 scale per block; convert it to bf16 first), biases, tied embeddings,
    moe_layer_freq other than 1. V3's multi-token-prediction module (`num_nextn_predict_layers`, stored as layer
    61 of the published checkpoint) is not part of the model: transformers skips it on loading and so does
    minids (hf.load_hf), since the next-token logits do not use it.
    """
    v3 = model_type == "deepseek_v3"
    quant = hf.get("quantization_config")
    if quant:
        method = quant.get("quant_method") if isinstance(quant, Mapping) else quant
        raise ValueError(f"ModelConfig.from_hf: this {model_type} checkpoint is quantized ({method!r}, block size "
                         f"{quant.get('weight_block_size') if isinstance(quant, Mapping) else '?'}); minids reads "
                         "bf16/float32 weights only: dequantize it first (DeepSeek's fp8_cast_bf16.py)")
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
    _require_common(hf, required, f"the {model_type} config", "DeepSeek-V2/V3")
    params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ("default", "yarn", None):
        raise ValueError(f"ModelConfig.from_hf: rope_type {kind!r} is not supported; V2/V3 use 'yarn' or none")
    fields: dict[str, Any] = dict(
        vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"], n_kv_heads=hf["num_attention_heads"],  # MLA has no KV heads to count
        d_ff=hf["intermediate_size"], max_seq_len=hf.get("max_position_embeddings") or 4096,
        rope_theta=float(rope_theta), norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        init_std=float(hf.get("initializer_range") or 0.006),
        kv_lora_rank=hf["kv_lora_rank"], q_lora_rank=hf.get("q_lora_rank"), qk_nope_head_dim=hf["qk_nope_head_dim"],
        qk_rope_head_dim=hf["qk_rope_head_dim"], v_head_dim=hf["v_head_dim"],
        # transformers' V2 always rotates pairs (2i, 2i+1) (complex multiplication); V3 as rope_interleave says
        rope_interleave=bool(hf.get("rope_interleave", True)) if v3 else True,
        rope_scaling=Yarn.from_hf(params) if kind == "yarn" else None,
    )
    first_dense = hf.get("first_k_dense_replace") or 0
    if not hf.get("n_routed_experts") or first_dense >= hf["num_hidden_layers"]:
        return fields  # every layer dense
    _require(hf, "moe_layer_freq", (1, None), "minids puts experts in every layer past first_k_dense_replace")
    _require(hf, "ep_size", (1, None), "minids keeps all experts in one process")
    missing = [k for k in ("num_experts_per_tok", "moe_intermediate_size") if hf.get(k) is None]
    if missing:
        raise ValueError(f"ModelConfig.from_hf: an MoE config (n_routed_experts set) lacks {', '.join(missing)}")
    if v3:
        # transformers' DeepseekV3TopkRouter: sigmoid, selection bias, group-limited (top-2 sum per group)
        _require(hf, "scoring_func", ("sigmoid", None), "DeepseekV3ForCausalLM scores experts by sigmoid")
        _require(hf, "topk_method", ("noaux_tc", None), "DeepseekV3ForCausalLM routes by noaux_tc")
        routing = dict(router_scoring="sigmoid", topk_method="noaux_tc", n_group=hf.get("n_group") or 1,
                       topk_group=hf.get("topk_group") or 1, norm_topk_prob=bool(hf.get("norm_topk_prob", True)))
    else:
        _require(hf, "scoring_func", ("softmax", None), "DeepseekV2ForCausalLM scores experts by softmax")
        _require(hf, "norm_topk_prob", (False, None), "DeepseekV2ForCausalLM never renormalises the gates")
        method = hf.get("topk_method") or "greedy"
        if method not in ("greedy", "group_limited_greedy"):
            raise ValueError(f"ModelConfig.from_hf: topk_method {method!r}; DeepseekV2ForCausalLM has 'greedy' "
                             "and 'group_limited_greedy'")
        routing = dict(router_scoring="softmax", topk_method=method, n_group=hf.get("n_group"),
                       topk_group=hf.get("topk_group"), norm_topk_prob=False)
    return {**fields, **routing,
            "n_routed_experts": hf["n_routed_experts"], "n_shared_experts": hf.get("n_shared_experts") or 0,
            "n_experts_per_token": hf["num_experts_per_tok"], "moe_d_ff": hf["moe_intermediate_size"],
            "first_dense_layers": first_dense, "routed_scaling": float(hf.get("routed_scaling_factor") or 1.0),
            "aux_loss_alpha": float(hf.get("aux_loss_alpha") or 0.0),
            "aux_loss_per_sequence": bool(hf.get("seq_aux", False))}


def _mla_to_hf(config: "ModelConfig") -> dict[str, Any]:
    """config.json of DeepseekV3ForCausalLM (sigmoid router, or no experts) or DeepseekV2ForCausalLM (softmax)."""
    v3 = config.hf_model_type == "deepseek_v3"
    if not v3 and not config.rope_interleave:
        raise ValueError("ModelConfig.to_hf_dict: DeepseekV2ForCausalLM always rotates RoPE pairs (2i, 2i+1); "
                         "this softmax-routed MLA config sets rope_interleave=False, which only V3 can say")
    if not v3 and config.norm_topk_prob:
        raise ValueError("ModelConfig.to_hf_dict: DeepseekV2ForCausalLM never renormalises the gates; this config "
                         "sets norm_topk_prob=True (a sigmoid router would make it a V3 config)")
    theta = config.rope_theta
    hf: dict[str, Any] = {
        "model_type": config.hf_model_type,
        "architectures": ["DeepseekV3ForCausalLM" if v3 else "DeepseekV2ForCausalLM"],
        "vocab_size": config.vocab_size, "hidden_size": config.d_model, "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads, "num_key_value_heads": config.n_heads,
        "intermediate_size": config.d_ff, "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps, "initializer_range": config.init_std, "hidden_act": "silu",
        "tie_word_embeddings": False, "attention_bias": False,
        "kv_lora_rank": config.kv_lora_rank, "q_lora_rank": config.q_lora_rank,
        "qk_nope_head_dim": config.qk_nope_head_dim, "qk_rope_head_dim": config.qk_rope_head_dim,
        "v_head_dim": config.v_head_dim,
        "rope_parameters": (config.rope_scaling.to_hf(theta) if config.rope_scaling is not None
                            else {"rope_type": "default", "rope_theta": theta}),
    }
    if v3:
        hf.update(rope_interleave=config.rope_interleave, num_nextn_predict_layers=0)
    if not config.is_moe:  # every layer dense: V3's layout with first_k_dense_replace = n_layers
        hf.update(first_k_dense_replace=config.n_layers, n_routed_experts=1, n_shared_experts=0,
                  num_experts_per_tok=1, moe_intermediate_size=config.d_ff, n_group=1, topk_group=1)
        return hf
    hf.update(
        n_routed_experts=config.n_routed_experts, n_shared_experts=config.n_shared_experts,
        num_experts_per_tok=config.n_experts_per_token, moe_intermediate_size=config.moe_d_ff,
        first_k_dense_replace=config.first_dense_layers, moe_layer_freq=1, norm_topk_prob=config.norm_topk_prob,
        routed_scaling_factor=config.routed_scaling, scoring_func=config.router_scoring,
        topk_method=config.topk_method, n_group=config.n_group or 1, topk_group=config.topk_group or 1,
        aux_loss_alpha=config.aux_loss_alpha, seq_aux=config.aux_loss_per_sequence,
    )
    if not v3 and config.topk_method == "greedy":
        hf.update(n_group=config.n_group, topk_group=config.topk_group)
    return hf


def _hf_config_as_dict(source: Any) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ModelConfig.from_hf: no config.json at {path}")
        from .files import read_json

        return read_json(path, expect=dict, what="model config.json")  # a damaged file is named
    if hasattr(source, "to_dict"):  # a transformers PretrainedConfig
        return source.to_dict()
    raise TypeError(
        "ModelConfig.from_hf takes a transformers config, a dict, or a path to config.json (or its folder); "
        f"got {type(source).__name__}"
    )


# Table 2 of the paper and the published config.json files (docs/references.md#table-2).
PRESETS: dict[str, dict[str, Any]] = {
    "deepseek-llm-7b": dict(
        vocab_size=102400, d_model=4096, n_layers=30, n_heads=32, n_kv_heads=32, d_ff=11008, max_seq_len=4096
    ),
    "deepseek-llm-67b": dict(
        vocab_size=102400, d_model=8192, n_layers=95, n_heads=64, n_kv_heads=8, d_ff=22016, max_seq_len=4096
    ),
    # The peer that spent a similar budget on FFN width: 80 layers, d_ff 28672 (config of meta-llama/Llama-2-70b-hf).
    "llama-2-70b": dict(
        vocab_size=32000, d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8, d_ff=28672, max_seq_len=4096,
        norm_eps=1e-5, init_std=0.02,
    ),
    # The 67B's shape at laptop width: 95 layers, 8 query heads per KV head, d_ff / d_model = 22016 / 8192.
    "deepseek-llm-67b-mini": dict(
        vocab_size=512, d_model=256, n_layers=95, n_heads=16, n_kv_heads=2, d_ff=688, max_seq_len=512
    ),
    # For tests and quick experiments: GQA 2:1, two layers.
    "tiny": dict(vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=176, max_seq_len=128),
    # DeepSeekMoE 16B (config.json of deepseek-ai/deepseek-moe-16b-base; docs/references.md#deepseekmoe): the 7B's
    # vocabulary, 28 MHA layers of width 2048; layer 0 dense (d_ff 10944), then 2 shared + 64 routed experts of
    # width 1408 with 6 routed per token. The paper initialises with std 0.006 (the config.json says 0.02).
    "deepseek-moe-16b": dict(
        vocab_size=102400, d_model=2048, n_layers=28, n_heads=16, n_kv_heads=16, d_ff=10944, max_seq_len=4096,
        n_routed_experts=64, n_shared_experts=2, n_experts_per_token=6, moe_d_ff=1408, first_dense_layers=1,
        aux_loss_alpha=0.001, aux_loss_per_sequence=True,
    ),
}

# DeepSeek-V2-Lite and DeepSeek-V3 (their config.json files, deepseek-ai/DeepSeek-V2-Lite and DeepSeek-V3; the
# V3 repository's inference/configs/config_671B.json has the same shapes). Both initialise with std 0.006 in
# their papers (config.json: 0.02). `ModelConfig.from_hf` of the published config.json gives the same fields.
_YARN_V2_LITE = Yarn(factor=40.0, original_max_seq_len=4096, mscale=0.707, mscale_all_dim=0.707)
_YARN_V3 = Yarn(factor=40.0, original_max_seq_len=4096, mscale=1.0, mscale_all_dim=1.0)
PRESETS["deepseek-v2-lite"] = dict(
    vocab_size=102400, d_model=2048, n_layers=27, n_heads=16, n_kv_heads=16, d_ff=10944, max_seq_len=163840,
    kv_lora_rank=512, q_lora_rank=None, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
    rope_interleave=True, rope_scaling=_YARN_V2_LITE,
    n_routed_experts=64, n_shared_experts=2, n_experts_per_token=6, moe_d_ff=1408, first_dense_layers=1,
    topk_method="greedy", n_group=1, topk_group=1, aux_loss_alpha=0.001, aux_loss_per_sequence=True,
)
PRESETS["deepseek-v3"] = dict(
    vocab_size=129280, d_model=7168, n_layers=61, n_heads=128, n_kv_heads=128, d_ff=18432, max_seq_len=163840,
    kv_lora_rank=512, q_lora_rank=1536, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
    rope_interleave=True, rope_scaling=_YARN_V3,
    n_routed_experts=256, n_shared_experts=1, n_experts_per_token=8, moe_d_ff=2048, first_dense_layers=3,
    router_scoring="sigmoid", topk_method="noaux_tc", n_group=8, topk_group=4, norm_topk_prob=True,
    routed_scaling=2.5,
)

CONFIG_FIELDS = tuple(f.name for f in fields(ModelConfig))
_MOE_FIELDS = CONFIG_FIELDS[CONFIG_FIELDS.index("n_routed_experts"):CONFIG_FIELDS.index("bias_update_speed") + 1]
_WINDOW_FIELDS = ("sliding_window", "layer_types")
_MLA_FIELDS = CONFIG_FIELDS[CONFIG_FIELDS.index("kv_lora_rank"):CONFIG_FIELDS.index("topk_group") + 1]
_OPTIONAL_FIELDS = _MOE_FIELDS + _WINDOW_FIELDS + _MLA_FIELDS  # ModelConfig's repr leaves them out at their defaults
