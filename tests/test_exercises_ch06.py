"""Chapter 06's checkers accept the reference solutions and reject typical mistakes."""

import pytest

from minids.exercises import check_kv_bytes_per_token, check_one_hop


def one_hop(chars):
    out = []
    for p, c in enumerate(chars):
        earlier = [q for q in range(p) if chars[q] == c]
        out.append(earlier[-1] + 1 if earlier else -1)
    return out


def test_one_hop_accepts_the_reference_and_rejects_mistakes(capsys):
    assert check_one_hop(one_hop) is True
    assert "one_hop: correct" in capsys.readouterr().out

    def lands_on_q(chars):  # forgets the + 1
        return [h - 1 if h >= 0 else -1 for h in one_hop(chars)]

    def first_occurrence(chars):
        return [chars.index(c) + 1 if c in chars[:p] else -1 for p, c in enumerate(chars)]

    def includes_p(chars):  # searches chars[:p + 1]: always finds p itself
        return [p + 1 for p in range(len(chars))]

    for wrong, hint in ((lands_on_q, "q \\+ 1"), (first_occurrence, "LAST"), (includes_p, "stop before p")):
        with pytest.raises(AssertionError, match=hint):
            check_one_hop(wrong)


def test_kv_bytes_accepts_the_reference_and_rejects_mistakes():
    def kv(cfg):
        return 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 2

    assert check_kv_bytes_per_token(kv) is True
    with pytest.raises(AssertionError, match="keys AND values"):
        check_kv_bytes_per_token(lambda cfg: cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 2)
    with pytest.raises(AssertionError, match="query heads"):
        check_kv_bytes_per_token(lambda cfg: 2 * cfg.n_layers * cfg.n_heads * cfg.head_dim * 2)
    with pytest.raises(AssertionError, match="expected"):
        check_kv_bytes_per_token(lambda cfg: 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 4)  # float32


def test_stubs_are_not_attempted(capsys):
    def stub(*args):
        raise NotImplementedError

    assert check_one_hop(stub) is False and check_kv_bytes_per_token(stub) is False
    assert "not attempted yet" in capsys.readouterr().out
