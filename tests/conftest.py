import pytest
import torch

from minids import ModelConfig

# Tiny Llama-format configs that cover every attention layout (name: n_heads, n_kv_heads).
LAYOUTS = {"mha": (4, 4), "gqa4": (8, 2), "gqa8": (8, 1), "mqa": (4, 1)}


def tiny_config(n_heads=4, n_kv_heads=2, **overrides) -> ModelConfig:
    fields = dict(vocab_size=97, d_model=16 * n_heads, n_layers=2, n_heads=n_heads, n_kv_heads=n_kv_heads,
                  d_ff=88, max_seq_len=64, rope_theta=10000.0, norm_eps=1e-6)
    fields.update(overrides)
    return ModelConfig(**fields)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()
