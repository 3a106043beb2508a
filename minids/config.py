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

The presets are the paper's Table 2 (arXiv 2401.02954) and the published config.json files of
deepseek-ai/deepseek-llm-7b-base and deepseek-llm-67b-base, plus Llama-2-70B (the peer that spent a
similar budget on FFN width) and two small shapes that run on a laptop CPU.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

# transformers' names for the two kinds of layer (MinistralConfig.layer_types, Gemma's, Qwen2's).
SLIDING, FULL = "sliding_attention", "full_attention"
LAYER_TYPES = (SLIDING, FULL)
# The model types from_hf maps, and what each adds to the Llama layout.
HF_MODEL_TYPES = {
    "llama": "Llama-format, as DeepSeek LLM uses",
    "deepseek": "DeepSeekMoE, as deepseek-moe-16b uses",
    "mistral": "Llama plus sliding_window in every layer",
    "ministral": "Mistral plus a per-layer layer_types pattern",
}


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
        self._check_window()

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
    def attention_kind(self) -> str:
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
        return asdict(self)

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

        model_type "llama" (DeepSeek LLM), "deepseek" (DeepSeekMoE), "mistral" (Llama plus sliding_window on
        every layer) or "ministral" (Mistral plus a layer_types pattern). Anything minids does not implement
        (biases, RoPE scaling, tied embeddings, another activation, a head_dim that is not d_model / n_heads,
        a layer type other than sliding_attention / full_attention) raises instead of being silently ignored.
        """
        hf = _hf_config_as_dict(source)
        model_type = hf.get("model_type")
        if model_type is not None and model_type not in HF_MODEL_TYPES:
            raise ValueError(
                f"ModelConfig.from_hf: model_type {model_type!r} is not supported; minids maps "
                + "; ".join(f"{k!r} ({v})" for k, v in HF_MODEL_TYPES.items())
            )
        required = {
            "vocab_size": "vocab_size",
            "hidden_size": "d_model",
            "num_hidden_layers": "n_layers",
            "num_attention_heads": "n_heads",
            "intermediate_size": "d_ff",
        }
        missing = [k for k in required if hf.get(k) is None]
        if missing:
            raise ValueError(f"ModelConfig.from_hf: the config lacks {', '.join(missing)}")
        _require(hf, "hidden_act", ("silu",), "SwiGLU uses the SiLU gate")
        _require(hf, "tie_word_embeddings", (False,), "DeepSeek LLM has an untied lm_head")
        _require(hf, "attention_bias", (False, None), "the projections have no bias")
        _require(hf, "mlp_bias", (False, None), "the FFN has no bias")
        rope_theta = hf.get("rope_theta")
        rope_params = hf.get("rope_parameters") or {}
        if isinstance(rope_params, Mapping):  # transformers >= 5 keeps rope_theta in here
            rope_theta = rope_params.get("rope_theta", rope_theta)
            rope_type = rope_params.get("rope_type", "default")
            if rope_type not in ("default", None):
                raise ValueError(f"ModelConfig.from_hf: rope_type {rope_type!r} is not supported, only 'default'")
        scaling = hf.get("rope_scaling")
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


def _require(hf: Mapping[str, Any], key: str, allowed: tuple, why: str) -> None:
    if key in hf and hf[key] not in allowed:
        raise ValueError(f"ModelConfig.from_hf: {key}={hf[key]!r} is not supported ({why}); allowed: {allowed}")


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


def _hf_config_as_dict(source: Any) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ModelConfig.from_hf: no config.json at {path}")
        with open(path, encoding="utf-8") as f:
            return json.load(f)
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

CONFIG_FIELDS = tuple(f.name for f in fields(ModelConfig))
_MOE_FIELDS = CONFIG_FIELDS[CONFIG_FIELDS.index("n_routed_experts"):CONFIG_FIELDS.index("bias_update_speed") + 1]
_WINDOW_FIELDS = ("sliding_window", "layer_types")
_OPTIONAL_FIELDS = _MOE_FIELDS + _WINDOW_FIELDS  # ModelConfig's repr leaves them out at their defaults
