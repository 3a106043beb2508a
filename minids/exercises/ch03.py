"""Chapter 03's checker: the KV-head repeat of grouped-query attention."""

from __future__ import annotations

import torch
from einops import repeat

from ._contract import checker, expect_close, expect_shape


@checker("repeat_kv")
def check_repeat_kv(fn) -> None:
    """fn(kv, n_rep): (b, k, s, d) -> (b, k * n_rep, s, d), query head j reading key/value head j // n_rep
    (the order of Llama-format checkpoints: the n_rep copies of head 0 first). Tried on MHA (n_rep 1), GQA and
    MQA shapes, with every value distinct so that a head read from the wrong place shows."""
    for b, k, s, d, n_rep in [(2, 2, 5, 4, 4), (1, 3, 2, 6, 2), (2, 1, 3, 4, 8), (1, 4, 3, 2, 1)]:
        kv = torch.arange(b * k * s * d, dtype=torch.float32).reshape(b, k, s, d)
        got = fn(kv, n_rep)
        want = repeat(kv, "b k s d -> b (k r) s d", r=n_rep)
        expect_shape(got, want.shape, f"repeat_kv(kv of shape {tuple(kv.shape)}, n_rep={n_rep})")
        for j in range(k * n_rep):
            if not torch.equal(got[:, j], want[:, j]):
                read = [i for i in range(k) if torch.equal(got[:, j], kv[:, i])]
                source = f"KV head {read[0]}" if read else "no KV head of the input"
                raise AssertionError(
                    f"with {k} KV heads and n_rep={n_rep}, output head {j} should be KV head {j // n_rep} "
                    f"(j // n_rep), yours is {source}"
                    + (" -- that is the tiled order (head j % k, as torch .repeat or cat gives); the checkpoints "
                       "use the interleaved one (k outer, r inner: repeat_interleave)" if read and read[0] == j % k else ""))
        expect_close(got, want, "repeat_kv's output")
