"""The byte n-gram baseline keeps mass for bytes it never saw, whatever its counts."""

import math

from minids.ngram import ByteNGram


def test_an_order_without_singletons_still_leaves_mass_for_unseen_bytes():
    model = ByteNGram(1).fit(b"aabb")  # every byte seen twice: Ney's D would be 0
    assert model.tables[0]["D"] == 0.5
    p = model.probs(b"c")
    assert 0 < p[0] < 1 / 256 and math.isfinite(model.bits_per_byte(b"abc"))

