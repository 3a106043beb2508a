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
_SHOWN_WHEN_SET = ("sliding_window", "layer_types")  # ModelConfig's repr leaves them out at their defaults
# The Llama-layout model types from_hf maps, and what each adds to Llama's.
HF_MODEL_TYPES = {
    "llama": "no window",
    "mistral": "sliding_window for every layer",
    "ministral": "sliding_window and a per-layer layer_types pattern",
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
        self._check_window()

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

    def __repr__(self) -> str:
        """The paper's fields always; the extensions beyond DeepSeek LLM (a sliding window...) only when set, so
        that a DeepSeek config prints as the paper describes it."""
        shown = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                 if f.name not in _SHOWN_WHEN_SET or getattr(self, f.name) != f.default]
        return f"ModelConfig({', '.join(shown)})"

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

        model_type "llama" (DeepSeek LLM), "mistral" (Llama plus sliding_window on every layer) or "ministral"
        (Mistral plus a layer_types pattern of windowed and full layers). Anything minids does not implement
        (biases, RoPE scaling, tied embeddings, another activation, a head_dim that is not d_model / n_heads,
        a layer type other than sliding_attention / full_attention) raises instead of being silently ignored.
        """
        hf = _hf_config_as_dict(source)
        model_type = hf.get("model_type")
        if model_type is not None and model_type not in HF_MODEL_TYPES:
            raise ValueError(
                f"ModelConfig.from_hf: model_type {model_type!r} is not supported; minids maps Llama-layout "
                f"configs: {', '.join(repr(k) for k in HF_MODEL_TYPES)} (DeepSeek LLM uses 'llama')"
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
            sliding_window=sliding_window,
            layer_types=layer_types,
        )

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json fields of the equivalent transformers config.

        LlamaConfig without a window (DeepSeek LLM), MistralConfig when every layer is windowed, and
        MinistralConfig (the Mistral layout with layer_types) for a pattern of windowed and full layers.
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
        }
        if self.sliding_window is None:
            return hf
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
    if model_type == "llama":
        if window is not None or types is not None:
            raise ValueError(
                f"ModelConfig.from_hf: a 'llama' config with sliding_window={window!r} / layer_types: "
                "LlamaForCausalLM ignores both, so the checkpoint's meaning is unclear; use model_type "
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


# Table 2 of the paper and the published config.json files (../shared/FACTS.md section 1).
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
}

CONFIG_FIELDS = tuple(f.name for f in fields(ModelConfig))
