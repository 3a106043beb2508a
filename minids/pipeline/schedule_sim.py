"""A small simulator of pipeline schedules, fed by per-stage times: GPipe, 1F1B, interleaved 1F1B,
zero bubble (ZB1P, ZBV) and DualPipeV.

The model is cut into S stages; each of p ranks holds S / p of them (its "chunks"). The batch is cut into
m microbatches. Three kinds of work exist per (stage, microbatch):

    F  forward                                        needs F of the previous stage
    B  backward: the gradient of the stage's input     needs B of the next stage (the last stage: its own F)
       (and, where the schedule does not split it, of its weights too: a "full" backward)
    W  the weights' gradient, split off from B          needs this stage's own B

Splitting B from W is the zero-bubble idea: B is on the critical path (the previous stage waits for it),
W is not, so W can be moved into the gaps. Every rank runs its operations in a fixed order
(`rank_orders`); an operation starts when its rank is free and its dependency is done. DualPipeV also
pairs one stage's F with another stage's B into one overlapped operation ("F&B"); torch runs the two
one after the other unless a custom overlap function is registered, so F&B lasts F + B here.

The schedules (p ranks, v chunks per rank, stage s on rank `stage_rank`):

    gpipe        every forward, then every backward                           v = 1
    1f1b         p-1-r forwards to fill the pipe, then one forward, one backward   v = 1
    interleaved  1F1B over v chunks per rank, stage s on rank s mod p (Megatron-LM's interleaving)
    zb1p         1F1B with B and W split, rank r deferring its W's to fill the drain (ZB-H1)
    zbv          zero bubble on a V: rank r holds stages r and 2p-1-r               v = 2
    dualpipev    DeepSeek's DualPipe cut in half: the same V, overlapped F&B pairs  v = 2

The idle time of each rank (the bubble) has published closed forms for equal stages (F, B = full
backward, W its weight part, per stage; p ranks):

    gpipe, 1f1b   (p - 1)(F + B)           fraction (p - 1) / (m + p - 1)
    interleaved   (p - 1)(F + B) / v       with F, B of a whole rank's layers: the bubble divided by v
    zb1p          (p - 1)(F + B - 2W)
    dualpipev     (p - 1)(F&B + B - 3W)    F, B, W of one chunk (half a rank's layers); DeepSeek writes it
                                           (PP/2 - 1)(...) with PP = 2p stages

`published_bubble` returns them and the tests check that the simulator reproduces each one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

SCHEDULES = ("gpipe", "1f1b", "interleaved", "zb1p", "zbv", "dualpipev")
V_SHAPED = ("zbv", "dualpipev")  # two chunks per rank, placed as a V
SPLIT_BACKWARD = ("zb1p", "zbv", "dualpipev")  # schedules that run B and W apart (at least sometimes)


def bubble_fraction(n_stages: int, n_microbatches: int, chunks: int = 1) -> float:
    """(p - 1) / (v m + p - 1): the idle share of a GPipe or 1F1B step (v = 1) with p equal stages and m
    microbatches; interleaving v chunks per rank divides the idle time by v."""
    p, m, v = n_stages, n_microbatches, chunks
    return (p - 1) / (v * m + p - 1)


def published_bubble(schedule: str, n_ranks: int, f: float, b: float, w: float = 0.0) -> float:
    """The idle time per rank the literature gives for equal stages: f forward, b full backward, w its
    weight part, each for one stage (one chunk: for interleaved 1/v of a rank's layers, for dualpipev half).
    dualpipev's F&B is f + b (run one after the other, as torch does by default)."""
    p = n_ranks
    if schedule in ("gpipe", "1f1b", "interleaved"):
        return (p - 1) * (f + b)  # interleaved: f, b are 1/v of a rank's F, B, so this is (p - 1)(F + B) / v
    if schedule == "zb1p":
        return (p - 1) * (f + b - 2 * w)
    if schedule == "dualpipev":
        return (p - 1) * ((f + b) + b - 3 * w)
    raise ValueError(f"no published bubble for {schedule!r}; known: gpipe, 1f1b, interleaved, zb1p, dualpipev")


# ---- where the stages live ---------------------------------------------------------------------------
def stage_rank(schedule: str, stage: int, n_ranks: int) -> int:
    """The rank that holds `stage`: round robin (s mod p) or, for the V schedules, down and back up:
    rank r holds stages r and 2p - 1 - r, so the first and the last stage share rank 0."""
    p = n_ranks
    if schedule in V_SHAPED:
        return stage if stage < p else 2 * p - 1 - stage
    return stage % p


def rank_stages(schedule: str, rank: int, n_ranks: int, chunks: int) -> list[int]:
    """The stages a rank holds, in model order."""
    return [s for s in range(n_ranks * chunks) if stage_rank(schedule, s, n_ranks) == rank]


def check_schedule(schedule: str, n_ranks: int, n_microbatches: int, chunks: int) -> int:
    """Raise on a schedule that cannot run; return the chunks per rank it uses."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule {schedule!r} is not one of {SCHEDULES}")
    p, m = n_ranks, n_microbatches
    if p < 1 or m < 1:
        raise ValueError(f"need at least one rank and one microbatch, got {p} ranks and {m} microbatches")
    if schedule in V_SHAPED:
        if chunks not in (1, 2):  # 1 = the caller did not choose; a V always has 2
            raise ValueError(f"{schedule} places exactly 2 chunks per rank (a V), got chunks={chunks}")
        chunks = 2
    elif schedule in ("interleaved", "zb1p"):
        if chunks < 1:
            raise ValueError(f"chunks per rank must be >= 1, got {chunks}")
        rounds = max(1, m // p)
        if m % rounds:
            raise ValueError(f"{schedule} runs microbatches in rounds of about p = {p}: m = {m} must be a "
                             f"multiple of {rounds} rounds (use m < {p} or a multiple of {rounds})")
    elif chunks != 1:
        raise ValueError(f"{schedule} holds one stage per rank (chunks=1), got chunks={chunks}")
    if schedule == "dualpipev" and m < 2 * p:
        raise ValueError(f"dualpipev needs at least as many microbatches as stages: m = {m} < {2 * p}")
    return chunks


# ---- the order each rank runs -------------------------------------------------------------------------
def _looped_orders(schedule: str, rank: int, p: int, m: int, v: int) -> list[tuple]:
    """gpipe, 1f1b, interleaved and zb1p: forwards go through a rank's chunks in rounds of about p
    microbatches ("depth first"), backwards through the chunks in reverse."""
    stages = rank_stages(schedule, rank, p, v)
    if schedule == "gpipe":
        return [("F", stages[0], i) for i in range(m)] + [("B", stages[0], i) for i in range(m)]
    per_round = m // max(1, m // p)
    zero_bubble = schedule == "zb1p"
    # Forwards issued before the first backward. 1F1B: p-1-r, enough for microbatch 0 to reach the last
    # stage and come back. Interleaved: the other chunks' rounds first, and two slots per hop to the last
    # rank (Megatron-LM); zero bubble one slot per hop (its B is shorter).
    if schedule == "1f1b":
        warmup = min(p - 1 - rank, m)
    else:
        warmup = min((v - 1) * per_round + (1 if zero_bubble else 2) * (p - 1 - rank), v * m)
    f_chunk = [stages[(k // per_round) % v] for k in range(v * m)]
    b_chunk = [stages[v - 1 - (k // per_round) % v] for k in range(v * m)]
    f_next, b_next = {s: 0 for s in stages}, {s: 0 for s in stages}
    order, pending_w = [], deque()

    def forward(k):
        s = f_chunk[k]
        order.append(("F", s, f_next[s]))
        f_next[s] += 1

    def backward(k):
        s = b_chunk[k]
        order.append(("B" if not zero_bubble else "I", s, b_next[s]))
        if zero_bubble:
            pending_w.append((s, b_next[s]))
            if k >= rank:  # rank r holds back its first r W's: they fill the gaps while the pipe drains
                order.append(("W", *pending_w.popleft()))
        b_next[s] += 1

    for k in range(warmup):
        forward(k)
    for k in range(v * m - warmup):  # steady state: one forward, one backward
        forward(warmup + k)
        backward(k)
    for k in range(v * m - warmup, v * m):  # drain
        backward(k)
    order += [("W", *sw) for sw in pending_w]
    return order


def _zbv_order(rank: int, p: int, m: int) -> list[tuple]:
    """Zero bubble on a V (the zero-bubble paper's ZB-V; torch's ScheduleZBVZeroBubble)."""
    down, up = rank, 2 * p - 1 - rank  # this rank's chunk on the way down and on the way back up
    n = max(2 * p - 1, m)  # planned with at least 2p - 1 microbatches; the extra ones are dropped below
    count = {(k, s): 0 for k in "FIW" for s in (down, up)}
    order = []

    def op(kind, s):
        order.append((kind, s, count[(kind, s)]))
        count[(kind, s)] += 1

    for _ in range(2 * (p - rank) - 1):
        op("F", down)
    for _ in range(rank):
        op("F", up), op("F", down)
    for _ in range(p - rank):
        op("F", up), op("I", up), op("W", up)
    while count[("F", up)] < count[("F", down)] or count[("F", down)] < n:
        if count[("F", down)] < n:
            op("F", down)
        op("I", down), op("W", down)
        op("F", up), op("I", up), op("W", up)
    for _ in range(rank):
        op("I", down), op("I", up)
    for _ in range(p - rank):
        op("I", down), op("W", down)
    while count[("W", up)] < count[("I", up)]:
        op("W", up)
    while count[("W", down)] < count[("I", down)]:
        op("W", down)
    return [o for o in order if o[2] < m]


def _dualpipev_order(rank: int, p: int, m: int) -> list[tuple]:
    """DeepSeek's DualPipeV (deepseek-ai/DualPipe; torch's ScheduleDualPipeV): the V placement, forwards
    of one chunk paired with backwards of the other ("FB"), and W's split off only where they fill gaps."""
    down, up = rank, 2 * p - 1 - rank
    count = {(k, s): 0 for k in "FB" for s in (down, up)}  # B counts full and input-only backwards alike
    order, pending_w = [], deque()

    def op(kind, s):  # kind: F, B (full backward) or I (input part; its W waits in pending_w)
        i = count[("F" if kind == "F" else "B", s)]
        order.append((kind, s, i))
        count[("F" if kind == "F" else "B", s)] += 1
        if kind == "I":
            pending_w.append((s, i))

    def fb(f_stage, b_stage):  # an overlapped pair: F of one chunk and a full B of the other
        order.append(("FB", (f_stage, count[("F", f_stage)]), (b_stage, count[("B", b_stage)])))
        count[("F", f_stage)] += 1
        count[("B", b_stage)] += 1

    def w_if_pending():
        if pending_w:
            order.append(("W", *pending_w.popleft()))

    for _ in range(2 * (p - rank - 1)):  # 1: forwards down the V
        op("F", down)
    for _ in range(rank + 1):  # 2: both chunks' forwards
        op("F", down), op("F", up)
    for _ in range(p - rank - 1):  # 3: zero bubble on the way up
        op("I", up), w_if_pending(), op("F", up)
    for k in range(m - 2 * p + rank + 1):  # 4: the steady state, two overlapped pairs
        if k == 0 and rank == p - 1:
            op("F", down), op("B", up)  # the bottom of the V: not overlapped, to start the backwards sooner
        else:
            fb(down, up)
        fb(up, down)
    for _ in range(p - rank - 1):  # 5
        op("B", up), fb(up, down)
    zb = False  # 6: both chunks' backwards; the later half split into B and W to fill the drain
    for k in range(rank + 1):
        zb = zb or (k == (rank + 1) // 2 and rank % 2 == 1)
        op("I" if zb else "B", up)
        zb = zb or (k == (rank + 1) // 2 and rank % 2 == 0)
        op("I" if zb else "B", down)
    for _ in range(p - rank - 1):  # 7
        w_if_pending(), op("I" if zb else "B", down)
    for _ in range(rank + 1):  # 8: the W's left
        w_if_pending()
    return order


def rank_orders(schedule: str, n_ranks: int, n_microbatches: int, chunks: int = 1) -> list[list[tuple]]:
    """For each rank, the operations it runs in order: ("F" | "B" | "I" | "W", stage, microbatch), or for
    an overlapped pair ("FB", (forward stage, microbatch), (backward stage, microbatch)). "B" is a full
    backward, "I" its input part (whose "W" comes later)."""
    v = check_schedule(schedule, n_ranks, n_microbatches, chunks)
    p, m = n_ranks, n_microbatches
    if schedule == "zbv":
        return [_zbv_order(r, p, m) for r in range(p)]
    if schedule == "dualpipev":
        return [_dualpipev_order(r, p, m) for r in range(p)]
    return [_looped_orders(schedule, r, p, m, v) for r in range(p)]


# ---- running the orders ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Op:
    rank: int
    kind: str  # "F", "B" (full backward), "I" (input gradient), "W" (weight gradient), "FB" (overlapped)
    stage: int  # the model stage (chunk); for FB the forward's
    microbatch: int  # for FB the forward's
    start: float
    end: float
    backward: tuple[int, int] | None = None  # FB only: the backward's (stage, microbatch)


@dataclass(frozen=True)
class Timeline:
    ops: list[Op]
    n_ranks: int
    n_microbatches: int
    schedule: str
    chunks: int = 1

    @property
    def n_stages(self) -> int:
        """The model's stages: chunks per rank times ranks."""
        return self.n_ranks * self.chunks

    @property
    def makespan(self) -> float:
        return max(op.end for op in self.ops)

    def busy(self, rank: int) -> float:
        return sum(op.end - op.start for op in self.ops if op.rank == rank)

    def idle(self, rank: int) -> float:
        """The bubble of one rank, in time units: the step's length minus the rank's work."""
        return self.makespan - self.busy(rank)

    @property
    def bubble_fraction(self) -> float:
        """Idle share of rank-time: 1 - sum of busy time / (p * makespan)."""
        total = sum(self.busy(k) for k in range(self.n_ranks))
        return 1.0 - total / (self.n_ranks * self.makespan)

    def peak_activations(self, rank: int, sizes: list[float] | None = None) -> float:
        """The most activations `rank` holds at once: a stage's forward of a microbatch stores them
        (sizes[stage], default 1 per stage and microbatch), its full backward or its W frees them."""
        held = peak = 0.0
        for op in sorted((o for o in self.ops if o.rank == rank), key=lambda o: o.start):
            if op.kind in ("F", "FB"):
                held += 1.0 if sizes is None else sizes[op.stage]
                peak = max(peak, held)
            if op.kind in ("B", "W", "FB"):
                s = op.backward[0] if op.kind == "FB" else op.stage
                held -= 1.0 if sizes is None else sizes[s]
        return peak

    def peak_in_flight(self, rank: int) -> int:
        """Most (stage, microbatch) activations held at once on `rank` (1 per stage and microbatch)."""
        return round(self.peak_activations(rank))


def simulate(
    forward_times: list[float],
    n_microbatches: int,
    schedule: str = "gpipe",
    backward_ratio: float = 2.0,
    forward_only: bool = False,
    comm_time: float = 0.0,
    chunks: int = 1,
    weight_share: float = 0.5,
) -> Timeline:
    """Run the schedule: forward_times[s] is stage s's forward time for one microbatch; there are
    len(forward_times) stages on len(forward_times) / chunks ranks (chunks = 2 for zbv and dualpipev).

    A full backward takes backward_ratio times the forward (about 2: gradients for the inputs and the
    weights); weight_share of it is W (about half: one matrix product each), the rest is B.
    comm_time is added between ranks (send an activation forward or a gradient back).
    """
    S, m = len(forward_times), n_microbatches
    if schedule in V_SHAPED and chunks == 1:
        chunks = 2
    if S < 1 or S % max(chunks, 1):
        raise ValueError(f"{S} stage times cannot be shared by ranks holding {chunks} chunks each")
    p = S // chunks
    if forward_only:  # inference: every microbatch's forward through one stage per rank, as GPipe runs it
        if chunks != 1:
            raise ValueError("forward_only simulates one stage per rank (chunks=1)")
        check_schedule("gpipe", p, m, 1)
        orders = [[("F", r, i) for i in range(m)] for r in range(p)]
    else:
        orders = rank_orders(schedule, p, m, chunks)
    where = {s: stage_rank(schedule, s, p) for s in range(S)}
    f = list(forward_times)
    full = [backward_ratio * x for x in f]
    w = [weight_share * x for x in full]
    duration = {"F": lambda s: f[s], "B": lambda s: full[s], "I": lambda s: full[s] - w[s], "W": lambda s: w[s]}

    def dependency(kind, s, i):
        if kind == "F":
            return ("F", s - 1, i) if s > 0 else None
        if kind in ("B", "I"):
            return ("B", s + 1, i) if s < S - 1 else ("F", s, i)
        return ("B", s, i)  # W after its own B

    done: dict[tuple, float] = {}  # (F | B, stage, microbatch) -> end; B covers full and input-only
    free, nxt, ops = [0.0] * p, [0] * p, []

    def ready_at(dep, rank):
        if dep is None:
            return 0.0
        return done[dep] + (comm_time if where[dep[1]] != rank else 0.0)

    while any(nxt[r] < len(orders[r]) for r in range(p)):
        progressed = False
        for r in range(p):
            if nxt[r] == len(orders[r]):
                continue
            item = orders[r][nxt[r]]
            if item[0] == "FB":
                (fs, fi), (bs, bi) = item[1], item[2]
                deps = [dependency("F", fs, fi), dependency("B", bs, bi)]
                parts = [("F", fs, fi), ("B", bs, bi)]
                length = f[fs] + full[bs]  # run one after the other: no overlap assumed
            else:
                kind, s, i = item
                deps, parts, length = [dependency(kind, s, i)], [("F" if kind == "F" else "B", s, i)], duration[kind](s)
                if kind == "W":
                    parts = []
            if any(d is not None and d not in done for d in deps):
                continue
            start = max([free[r]] + [ready_at(d, r) for d in deps])
            free[r] = start + length
            for part in parts:
                done[part] = free[r]
            if item[0] == "FB":
                ops.append(Op(r, "FB", fs, fi, start, free[r], backward=(bs, bi)))
            else:
                ops.append(Op(r, item[0], item[1], item[2], start, free[r]))
            nxt[r] += 1
            progressed = True
        if not progressed:  # cannot happen for the orders above; guards against a bad order
            raise RuntimeError("schedule deadlocked: every rank waits on another")
    return Timeline(ops, p, m, "forward" if forward_only else schedule, chunks)
