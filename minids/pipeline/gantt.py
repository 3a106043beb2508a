"""Draw a simulated pipeline step as a Gantt chart: one row per rank, one box per operation."""

from __future__ import annotations

from .schedule_sim import Timeline

COLORS = {"F": "#4c72b0", "B": "#dd8452", "I": "#c44e52", "W": "#55a868", "FB": "#8172b3"}
NAMES = {"F": "forward F", "B": "full backward B", "I": "input-gradient B", "W": "weight-gradient W",
         "FB": "overlapped F&B"}


def plot_timeline(timeline: Timeline, ax=None, title: str | None = None, time_unit: str = "time units"):
    """Rank 0 on top; one colour per kind of work, microbatch numbers in the boxes; white = bubble.
    With several stages per rank, the boxes of a rank's later stages are hatched."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    p = timeline.n_ranks
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 0.6 + 0.45 * p), dpi=100)
    later = {op.stage for op in timeline.ops if op.stage >= p}  # stages past a rank's first one
    for op in timeline.ops:
        y = p - 1 - op.rank
        width = op.end - op.start
        ax.broken_barh([(op.start, width)], (y - 0.4, 0.8), facecolors=COLORS[op.kind], edgecolor="white",
                       hatch="///" if op.stage in later else None)
        if width >= 0.025 * timeline.makespan:
            ax.text(op.start + width / 2, y, str(op.microbatch), ha="center", va="center", fontsize=8,
                    color="white")
    ax.set_yticks(range(p), [f"rank {p - 1 - k}" for k in range(p)])
    ax.set_xlim(0, timeline.makespan)
    ax.set_xlabel(f"time ({time_unit})")
    kinds = [k for k in COLORS if any(op.kind == k for op in timeline.ops)]
    handles = [Patch(color=COLORS[k]) for k in kinds]
    labels = [NAMES[k] for k in kinds]
    if later:
        handles.append(Patch(facecolor="white", edgecolor="gray", hatch="///"))
        labels.append("a later stage (chunk)")
    ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside the chart
    ax.set_title(title or f"{timeline.schedule}: {p} ranks, {timeline.n_microbatches} microbatches, "
                 f"bubble {timeline.bubble_fraction:.0%}")
    return ax
