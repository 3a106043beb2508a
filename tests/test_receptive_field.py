"""The exact reach of a windowed stack: a token moves later logits at exactly p .. p + L (W - 1), no further."""

import math

import pytest
import torch

from minids import DeepSeekLM
from minids.receptive_field import influence, influenced_positions, theoretical_reach

from conftest import tiny_config

S, F = "sliding_attention", "full_attention"


def _model(n_layers, window, layer_types=None):
    # Weights of std 1/sqrt(d_model), not the paper's 0.006: each attention hop then passes O(1/W) of the
    # change on, so the far edge of the reach stays many orders of magnitude above float64 round-off.
    cfg = tiny_config(4, 2, n_layers=n_layers, sliding_window=window, layer_types=layer_types, init_std=0.125)
    return DeepSeekLM(cfg, dtype=torch.float64).eval()


def test_theoretical_reach():
    assert theoretical_reach(tiny_config(n_layers=4, sliding_window=5)) == 16
    assert theoretical_reach(tiny_config(n_layers=4, sliding_window=1)) == 0  # each token sees only itself
    assert theoretical_reach(tiny_config(n_layers=3, sliding_window=5, layer_types=(S, F, S))) == math.inf
    assert theoretical_reach(tiny_config(n_layers=3)) == math.inf


@pytest.mark.parametrize("n_layers, window", [(4, 5), (1, 5), (2, 9), (3, 2)])
def test_the_reach_is_exactly_l_times_w_minus_1(n_layers, window):
    model = _model(n_layers, window)
    ids = torch.randint(0, 97, (1, 40))
    reach = theoretical_reach(model.config)
    for p in (3, 30):
        expected = list(range(p, min(39, p + reach) + 1))
        assert influenced_positions(model, ids, p) == expected, (n_layers, window, p)
    change = influence(model, ids, 3)
    assert torch.all(change[: 3 + reach + 1][3:] > 1e-8 * change.max())  # well above round-off, every one
    assert torch.all(change[3 + reach + 1 :] == 0)  # and beyond the edge: exactly nothing


@pytest.mark.parametrize("full_layer", [0, 3])
def test_one_full_attention_layer_reaches_the_end(full_layer):
    types = [S] * 4
    types[full_layer] = F
    model = _model(4, 5, layer_types=tuple(types))
    ids = torch.randint(0, 97, (1, 40))
    assert influenced_positions(model, ids, 3) == list(range(3, 40))


def test_influence_leaves_the_model_alone_and_checks_p():
    model = _model(2, 3).to(torch.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 97, (2, 12))
    assert influenced_positions(model, ids, 5) == list(range(5, 10))
    assert all(torch.equal(before[k], v) and v.dtype == torch.float32 for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match=r"p must be a position in \[0, 12\)"):
        influence(model, ids, 12)
