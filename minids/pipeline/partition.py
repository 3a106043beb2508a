"""Cut the decoder layers into contiguous pipeline stages of (as nearly as possible) equal cost.

Stage k runs layers ranges[k] (a `range`); the first stage also holds embed_tokens, the last the final
norm, lm_head and loss. A pipeline runs at the pace of its heaviest stage, so the goal is to minimise the
maximum stage cost. For contiguous pieces this has an exact answer by dynamic programming
(`min_max_partition`): best[k][j] = the smallest possible maximum when the first j pieces form k stages.
Among the partitions that reach that optimum we take the one with the smallest sum of squared stage
costs, the most even spread, so that the tables read naturally.

    efficiency = ideal / max stage cost,  ideal = total cost / n_stages

is the fraction of the pipeline's devices doing useful work (before counting the schedule's bubble).
The "naive" split gives every stage the same number of layers and ignores the embedding and the head.
"""

from __future__ import annotations

from ..config import ModelConfig
from .cost import COST_KINDS, module_costs


def check_n_stages(n_layers: int, n_stages: int) -> None:
    if isinstance(n_stages, bool) or not isinstance(n_stages, int):
        raise TypeError(f"n_stages must be an int, got {n_stages!r}")
    if not 1 <= n_stages <= n_layers:
        raise ValueError(
            f"cannot split {n_layers} decoder layer(s) into {n_stages} pipeline stages: every stage needs at "
            f"least one layer, so n_stages must be between 1 and {n_layers}"
        )


def min_max_partition(weights: list[int], n_parts: int) -> list[range]:
    """Split weights into n_parts non-empty contiguous ranges minimising the largest range sum (exact).

    Ties on the largest sum are broken by the smallest sum of squares (the most even split).
    """
    n = len(weights)
    check_n_stages(n, n_parts)
    if any(w < 0 for w in weights):
        raise ValueError("weights must be >= 0 (costs)")
    prefix = [0]
    for w in weights:
        prefix.append(prefix[-1] + w)

    def seg(i, j):  # sum of weights[i:j]
        return prefix[j] - prefix[i]

    inf = float("inf")
    # Pass 1: the optimal bottleneck. best[j] = min over splits of weights[:j] into k parts of the max part.
    best = [0] + [inf] * n
    for k in range(1, n_parts + 1):
        new = [inf] * (n + 1)
        for j in range(k, n - (n_parts - k) + 1):
            for i in range(j - 1, k - 2, -1):  # last part = weights[i:j], growing as i moves left
                if seg(i, j) >= new[j]:
                    break  # it only grows from here: no better split on this side
                new[j] = min(new[j], max(best[i], seg(i, j)))
        best = new
    bottleneck = best[n]
    # Pass 2: among splits whose every part is <= bottleneck, the smallest sum of squares; remember cuts.
    sq = [0] + [inf] * n
    cuts: list[list[int]] = []
    for k in range(1, n_parts + 1):
        new, arg = [inf] * (n + 1), [-1] * (n + 1)
        for j in range(k, n - (n_parts - k) + 1):
            for i in range(j - 1, k - 2, -1):
                s = seg(i, j)
                if s > bottleneck:
                    break
                if sq[i] + s * s < new[j]:
                    new[j], arg[j] = sq[i] + s * s, i
        sq = new
        cuts.append(arg)
    bounds, j = [n], n
    for k in range(n_parts - 1, -1, -1):
        j = cuts[k][j]
        bounds.append(j)
    bounds.reverse()
    return [range(bounds[k], bounds[k + 1]) for k in range(n_parts)]


def _weights(config: ModelConfig, by: str, seq_len: int | None) -> list[int]:
    """One weight per decoder layer, with the embedding folded into layer 0 and the head into the last."""
    if by not in COST_KINDS:
        raise ValueError(f"partition by {by!r}: choose one of {COST_KINDS}")
    embed, layers, head = module_costs(config, seq_len)
    w = [c.get(by) for c in layers]
    w[0] += embed.get(by)
    w[-1] += head.get(by)
    return w


def partition(config: ModelConfig, n_stages: int, by: str = "flops", seq_len: int | None = None) -> list[range]:
    """Contiguous, ordered layer ranges, one per stage, covering every decoder layer, balanced by `by` cost.

    >>> partition(ModelConfig.preset("deepseek-llm-7b"), 4)
    [range(0, 8), range(8, 16), range(16, 24), range(24, 30)]
    """
    check_n_stages(config.n_layers, n_stages)
    return min_max_partition(_weights(config, by, seq_len), n_stages)


def naive_partition(config: ModelConfig, n_stages: int) -> list[range]:
    """Equal layer counts (the first n_layers % n_stages stages get one more), ignoring embedding and head."""
    check_n_stages(config.n_layers, n_stages)
    q, r = divmod(config.n_layers, n_stages)
    bounds = [0]
    for k in range(n_stages):
        bounds.append(bounds[-1] + q + (1 if k < r else 0))
    return [range(bounds[k], bounds[k + 1]) for k in range(n_stages)]


def check_ranges(config: ModelConfig, ranges: list[range]) -> None:
    """Raise unless ranges are non-empty, contiguous, ordered and cover layers 0 .. n_layers - 1."""
    start = 0
    for k, r in enumerate(ranges):
        if not isinstance(r, range) or r.step != 1 or r.start != start or len(r) == 0:
            raise ValueError(
                f"stage {k} has layers {r!r}; stages must be non-empty contiguous ranges in order, "
                f"stage {k} starting at layer {start}"
            )
        start = r.stop
    if start != config.n_layers:
        raise ValueError(f"the stages cover layers 0..{start - 1}, but the model has {config.n_layers} layers")


def stage_costs(config: ModelConfig, ranges: list[range], by: str = "flops", seq_len: int | None = None) -> list[int]:
    """Each stage's cost: its layers, plus the embedding on the first stage and the head on the last."""
    check_ranges(config, ranges)
    w = _weights(config, by, seq_len)
    return [sum(w[i] for i in r) for r in ranges]


def efficiency(config: ModelConfig, ranges: list[range], by: str = "flops", seq_len: int | None = None) -> float:
    """ideal / max stage cost: 1.0 for a perfect split; the share of device time not lost to imbalance."""
    costs = stage_costs(config, ranges, by, seq_len)
    return sum(costs) / len(costs) / max(costs)


def rank_costs(config: ModelConfig, ranges: list[range], schedule: str, n_ranks: int, by: str = "flops",
               seq_len: int | None = None) -> list[int]:
    """Each rank's cost when the stages `ranges` are placed as `schedule` places them: one stage per rank,
    round robin for interleaved (stage s on rank s mod p), or a V (rank r: stages r and 2p - 1 - r)."""
    from .schedule_sim import stage_rank

    if len(ranges) % n_ranks:
        raise ValueError(f"{len(ranges)} stages cannot be shared evenly by {n_ranks} ranks")
    costs = stage_costs(config, ranges, by, seq_len)
    per_rank = [0] * n_ranks
    for s, c in enumerate(costs):
        per_rank[stage_rank(schedule, s, n_ranks)] += c
    return per_rank
