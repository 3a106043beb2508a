"""Chapter 00a's checker accepts the reference merge step and rejects the usual mistakes."""

import pytest

from minids.exercises import check_merge_pair
from minids.exercises.ch00a import merge_pair


def test_reference_passes(capsys):
    assert check_merge_pair(merge_pair) is True
    assert capsys.readouterr().out == "merge_pair: correct\n"


def test_stub_is_not_attempted(capsys):
    def stub(ids, pair, new_id):
        raise NotImplementedError

    assert check_merge_pair(stub) is False
    assert "not attempted yet" in capsys.readouterr().out


def test_dropping_the_last_id_is_caught():
    def drops_last(ids, pair, new_id):  # loops over range(len(ids) - 1) and forgets the tail
        out, i = [], 0
        while i < len(ids) - 1:
            if (ids[i], ids[i + 1]) == pair:
                out.append(new_id)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        return out

    with pytest.raises(AssertionError, match=r"merge_pair\(\[3, 1, 2, 4\].*is \[3, 9\], expected \[3, 9, 4\]"):
        check_merge_pair(drops_last)


def test_overlapping_merge_is_caught():
    def overlaps(ids, pair, new_id):  # marks every position where the pair starts, so (5, 5, 5) becomes (7, 7)
        return [new_id if (a, b) == pair else a for a, b in zip(ids, ids[1:])] if len(ids) > 1 else list(ids)

    with pytest.raises(AssertionError, match="expected"):
        check_merge_pair(overlaps)


def test_mutating_the_input_is_caught():
    def in_place(ids, pair, new_id):
        result = merge_pair(ids, pair, new_id)
        ids[:] = result
        return ids

    with pytest.raises(AssertionError, match="changed its input"):
        check_merge_pair(in_place)


def test_unordered_pair_is_caught():
    def unordered(ids, pair, new_id):
        out, i = [], 0
        while i < len(ids):
            if i + 1 < len(ids) and {ids[i], ids[i + 1]} == set(pair):
                out.append(new_id)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        return out

    with pytest.raises(AssertionError, match=r"\(2, 1\) is not \(1, 2\)"):
        check_merge_pair(unordered)
