"""you_are_here: every piece lights its own boxes, and the sizes beside the stack come from the presets."""

import matplotlib

matplotlib.use("Agg")

import pytest

from minids import ModelConfig, count_params, kv_cache_bytes
from minids.diagram import PIECES, piece_facts, you_are_here


def _highlighted(fig):
    ax = fig.axes[0]
    return sorted(t.get_text() for t in ax.texts if t.get_fontweight() == "bold" and not t.get_text().startswith(
        ("you are here", "DeepSeek")))


@pytest.mark.parametrize("piece", list(PIECES))
def test_every_piece_lights_its_boxes(piece):
    fig = you_are_here(piece, show=False)
    assert len(_highlighted(fig)) == len(PIECES[piece])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert f"you are here: {piece.replace('_', ' ')}" in texts
    assert "DeepSeek LLM 7B" in texts and "DeepSeek LLM 67B" in texts


def test_attention_lights_attention_only():
    assert _highlighted(you_are_here("attention", show=False)) == ["attention (RoPE on q, k)"]
    assert _highlighted(you_are_here("residual", show=False)) == ["+ residual", "+ residual"]


def test_sizes_come_from_the_presets():
    c67 = ModelConfig.preset("deepseek-llm-67b")
    assert piece_facts("kv_cache", c67)[1] == f"KV cache {kv_cache_bytes(c67, 1) // 1024:,} KiB per token in bf16"
    assert "380 KiB" in piece_facts("kv_cache", c67)[1]
    assert "95 layers" in piece_facts("ffn", c67)[0] and "8 kv heads" in piece_facts("ffn", c67)[0]
    per_layer = count_params(c67).per_layer
    assert f"{per_layer / 1e6:.1f}M" in piece_facts("decoder_layer", c67)[1]


def test_unknown_piece_is_named():
    with pytest.raises(ValueError, match="unknown piece 'atention'.*attention"):
        you_are_here("atention", show=False)
