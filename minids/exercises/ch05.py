"""Chapter 05's checker: the parameter count of one decoder layer, from the config alone."""

from __future__ import annotations

from ..accounting import count_params
from ..config import ModelConfig
from ._contract import checker

# MHA, GQA 8:1 and MQA, a layer whose head_dim is not d_model / n_heads, and the real 7B and 67B shapes.
_CONFIGS = {
    "tiny (MHA)": dict(base="tiny", n_kv_heads=None),
    "deepseek-llm-7b (MHA)": dict(base="deepseek-llm-7b"),
    "deepseek-llm-67b (GQA 8:1)": dict(base="deepseek-llm-67b"),
    "deepseek-llm-67b-mini (GQA 8:1)": dict(base="deepseek-llm-67b-mini"),
    "tiny as MQA": dict(base="tiny", n_kv_heads=1),
}


def _configs() -> dict[str, ModelConfig]:
    out = {}
    for name, spec in _CONFIGS.items():
        cfg = ModelConfig.preset(spec["base"])
        if spec.get("n_kv_heads"):
            cfg = cfg.replace(n_kv_heads=spec["n_kv_heads"])
        out[name] = cfg
    return out


def _diagnose(cfg: ModelConfig, got: int, want: int) -> str:
    d, hd = cfg.d_model, cfg.head_dim
    diff = got - want
    known = {
        2 * d * (cfg.n_heads - cfg.n_kv_heads) * hd: "k_proj and v_proj have n_kv_heads heads, not n_heads",
        -2 * d: "each layer has two RMSNorm gains of d_model each",
        2 * d: "a layer has two RMSNorms (input and post-attention), not four; the final norm is not per layer",
        -d * cfg.d_ff: "the SwiGLU FFN has three matrices (gate_proj, up_proj, down_proj)",
        -2 * d * cfg.n_kv_heads * hd: "count both k_proj and v_proj",
    }
    hint = known.get(diff, "count q_proj, k_proj, v_proj, o_proj, the three FFN matrices and the two norm gains")
    return f"off by {diff:+,}: {hint}"


@checker("layer_params")
def check_layer_params(fn) -> None:
    """fn(config) -> the number of parameters of one (dense) DecoderLayer of that config, compared with
    count_params(config).per_layer on MHA, GQA and MQA shapes."""
    for name, cfg in _configs().items():
        got, want = fn(cfg), count_params(cfg).per_layer
        assert isinstance(got, int) and not isinstance(got, bool), \
            f"layer_params should return an int, got {type(got).__name__} for {name}"
        assert got == want, f"{name}: your count is {got:,}, count_params says {want:,}; {_diagnose(cfg, got, want)}"
