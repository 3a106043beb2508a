"""Chapter 14's checkers accept the reference answers and reject the usual mistakes with a hint."""

import pytest
import torch
from einops import einsum

from minids.exercises import check_absorbed_scores, check_latent_cache_bytes


def absorbed(q_c, w_uk, c_kv):
    return einsum(einsum(q_c, w_uk, "b h t n, h n c -> b h t c"), c_kv, "b h t c, b s c -> b h t s")


def cache_bytes(config, seq_len, batch=1, bytes_per_number=2):
    return config.n_layers * (config.kv_lora_rank + config.qk_rope_head_dim) * seq_len * batch * bytes_per_number


def test_reference_answers_pass(capsys):
    assert check_absorbed_scores(absorbed) is True
    assert check_latent_cache_bytes(cache_bytes) is True
    assert "correct" in capsys.readouterr().out


def test_stubs_are_not_attempted(capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError

    assert check_absorbed_scores(stub) is False and check_latent_cache_bytes(stub) is False
    assert "not attempted yet" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    # one head's W_UK for every head
    (lambda q, w, c: einsum(einsum(q, w[0], "b h t n, n c -> b h t c"), c, "b h t c, b s c -> b h t s"),
     "differs at index"),
    # the heads summed away
    (lambda q, w, c: einsum(einsum(q, w, "b h t n, h n c -> b t c"), c, "b t c, b s c -> b t s"), "has shape"),
    # W_UK skipped: the query scored against the first n latent channels
    (lambda q, w, c: einsum(q, c[..., :q.shape[-1]], "b h t n, b s n -> b h t s"), "differs at index"),
])
def test_absorbed_scores_mistakes_are_named(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check_absorbed_scores(wrong)


@pytest.mark.parametrize("wrong", [
    lambda cfg, s, batch=1, bytes_per_number=2: 2 * cache_bytes(cfg, s, batch, bytes_per_number),  # K and V
    lambda cfg, s, batch=1, bytes_per_number=2: cfg.n_layers * cfg.kv_lora_rank * s * batch * bytes_per_number,
    lambda cfg, s, batch=1, bytes_per_number=2: cfg.n_heads * cache_bytes(cfg, s, batch, bytes_per_number),
])
def test_latent_cache_mistakes_are_named(wrong):
    with pytest.raises(AssertionError, match="the cache of .* is"):
        check_latent_cache_bytes(wrong)
