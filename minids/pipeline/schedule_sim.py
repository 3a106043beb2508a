"""A small simulator of pipeline schedules (GPipe and 1F1B), fed by per-stage forward times.

The batch is cut into m microbatches. Stage k can run the forward F of microbatch i once stage k-1 has
finished F(i); it can run the backward B(i) once stage k+1 has finished B(i) (the last stage starts B(i)
right after its own F(i), where the loss is). Each stage runs its operations in a fixed order:

    GPipe  every forward, then every backward           F0 F1 .. Fm-1 B0 B1 .. Bm-1
    1F1B   p-1-k forwards to fill the pipe, then alternate one forward and one backward, then drain

Both leave the same idle time (the bubble): with p equal stages taking f per forward and b per backward,
the step lasts (m + p - 1)(f + b) while each stage works m(f + b), so the idle fraction is
(p - 1) / (m + p - 1). 1F1B's gain is memory: stage k holds at most p - k microbatches' activations at
once instead of m, so m can grow (shrinking the bubble) without running out of memory.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEDULES = ("gpipe", "1f1b")


def bubble_fraction(n_stages: int, n_microbatches: int) -> float:
    """(p - 1) / (m + p - 1): the idle share of a GPipe or 1F1B step with p equal stages and m microbatches."""
    p, m = n_stages, n_microbatches
    return (p - 1) / (m + p - 1)


@dataclass(frozen=True)
class Op:
    stage: int
    kind: str  # "F" (forward) or "B" (backward)
    microbatch: int
    start: float
    end: float


@dataclass(frozen=True)
class Timeline:
    ops: list[Op]
    n_stages: int
    n_microbatches: int
    schedule: str

    @property
    def makespan(self) -> float:
        return max(op.end for op in self.ops)

    def busy(self, stage: int) -> float:
        return sum(op.end - op.start for op in self.ops if op.stage == stage)

    @property
    def bubble_fraction(self) -> float:
        """Idle share of stage-time: 1 - sum of busy time / (p * makespan)."""
        total = sum(self.busy(k) for k in range(self.n_stages))
        return 1.0 - total / (self.n_stages * self.makespan)

    def peak_in_flight(self, stage: int) -> int:
        """Most microbatches whose forward ran on `stage` and whose backward has not: activations held."""
        held = peak = 0
        for op in sorted((o for o in self.ops if o.stage == stage), key=lambda o: o.start):
            held += 1 if op.kind == "F" else -1
            peak = max(peak, held)
        return peak


def stage_order(schedule: str, stage: int, n_stages: int, n_microbatches: int, forward_only: bool = False):
    """The (kind, microbatch) sequence that `stage` runs."""
    m = n_microbatches
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule {schedule!r} is not one of {SCHEDULES}")
    if forward_only:
        return [("F", i) for i in range(m)]
    if schedule == "gpipe":
        return [("F", i) for i in range(m)] + [("B", i) for i in range(m)]
    warmup = min(n_stages - 1 - stage, m)
    order = [("F", i) for i in range(warmup)]
    b = 0  # next microbatch to run backward
    for i in range(warmup, m):  # steady state: one forward, one backward
        order += [("F", i), ("B", b)]
        b += 1
    order += [("B", i) for i in range(b, m)]
    return order


def simulate(
    forward_times: list[float],
    n_microbatches: int,
    schedule: str = "gpipe",
    backward_ratio: float = 2.0,
    forward_only: bool = False,
    comm_time: float = 0.0,
) -> Timeline:
    """Run the schedule: forward_times[k] is stage k's forward time for one microbatch.

    The backward takes backward_ratio times the forward (about 2: gradients for the inputs and the weights).
    comm_time is added between stages (send an activation forward or a gradient back).
    """
    p, m = len(forward_times), n_microbatches
    if p < 1 or m < 1:
        raise ValueError(f"need at least one stage and one microbatch, got {p} stages and {m} microbatches")
    orders = [stage_order(schedule, k, p, m, forward_only) for k in range(p)]
    done: dict[tuple[int, str, int], float] = {}
    free = [0.0] * p  # when each stage is next idle
    nxt = [0] * p  # index of each stage's next operation
    ops: list[Op] = []
    while any(nxt[k] < len(orders[k]) for k in range(p)):
        progressed = False
        for k in range(p):
            if nxt[k] == len(orders[k]):
                continue
            kind, i = orders[k][nxt[k]]
            if kind == "F":
                dep = (k - 1, "F", i) if k > 0 else None
                duration = forward_times[k]
            else:
                dep = (k + 1, "B", i) if k < p - 1 else (k, "F", i)
                duration = backward_ratio * forward_times[k]
            if dep is not None and dep not in done:
                continue
            ready = 0.0 if dep is None else done[dep] + (comm_time if dep[0] != k else 0.0)
            start = max(free[k], ready)
            done[(k, kind, i)] = free[k] = start + duration
            ops.append(Op(k, kind, i, start, start + duration))
            nxt[k] += 1
            progressed = True
        if not progressed:  # cannot happen for the two schedules here; guards against a bad order
            raise RuntimeError("schedule deadlocked: every stage waits on another")
    return Timeline(ops, p, m, "forward" if forward_only else schedule)
