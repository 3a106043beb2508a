"""Chapter 05's checker accepts the reference layer count and rejects the typical mistakes."""

import pytest

from minids.exercises import check_layer_params


def reference(c):
    d, hd = c.d_model, c.head_dim
    attention = d * c.n_heads * hd + 2 * d * c.n_kv_heads * hd + c.n_heads * hd * d
    return attention + 3 * d * c.d_ff + 2 * d


def test_accepts_reference(capsys):
    assert check_layer_params(reference) is True
    assert capsys.readouterr().out.strip() == "layer_params: correct"


@pytest.mark.parametrize("wrong, hint", [
    (lambda c: reference(c) + 2 * c.d_model * (c.n_heads - c.n_kv_heads) * c.head_dim, "n_kv_heads heads"),  # MHA
    (lambda c: reference(c) - 2 * c.d_model, "two RMSNorm gains"),                                         # no norms
    (lambda c: reference(c) - c.d_model * c.d_ff, "three matrices"),                                       # 2 FFN mats
    (lambda c: float(reference(c)), "int"),
    (lambda c: reference(c) + 1, "off by \\+1"),                                                            # off by one
])
def test_rejects_typical_mistakes(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check_layer_params(wrong)


def test_stub_is_not_attempted(capsys):
    def stub(config):
        raise NotImplementedError

    assert check_layer_params(stub) is False
    assert "not attempted yet" in capsys.readouterr().out
