"""Draw a simulated pipeline step as a Gantt chart: one row per stage, one box per forward or backward."""

from __future__ import annotations

from .schedule_sim import Timeline

COLORS = {"F": "#4c72b0", "B": "#dd8452"}


def plot_timeline(timeline: Timeline, ax=None, title: str | None = None, time_unit: str = "time units"):
    """Stage 0 on top; forwards blue, backwards orange, microbatch numbers in the boxes; white = bubble."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if ax is None:
        _, ax = plt.subplots(figsize=(10, 0.5 + 0.45 * timeline.n_stages), dpi=100)
    p = timeline.n_stages
    for op in timeline.ops:
        y = p - 1 - op.stage
        width = op.end - op.start
        ax.broken_barh([(op.start, width)], (y - 0.4, 0.8), facecolors=COLORS[op.kind], edgecolor="white")
        if width >= 0.03 * timeline.makespan:
            ax.text(op.start + width / 2, y, str(op.microbatch), ha="center", va="center", fontsize=8, color="white")
    ax.set_yticks(range(p), [f"stage {p - 1 - k}" for k in range(p)])
    ax.set_xlim(0, timeline.makespan)
    ax.set_xlabel(f"time ({time_unit})")
    kinds = ["F"] if timeline.schedule == "forward" else ["F", "B"]
    names = {"F": "forward", "B": "backward"}
    ax.legend([Patch(color=COLORS[k]) for k in kinds], [names[k] for k in kinds], fontsize=8,
              loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside the chart, never over a box
    ax.set_title(title or f"{timeline.schedule}: {p} stages, {timeline.n_microbatches} microbatches, "
                 f"bubble {timeline.bubble_fraction:.0%}")
    return ax
