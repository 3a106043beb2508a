"""Pipeline parallelism for DeepSeekLM: cost the layers, cut them into stages, schedule, run.

    cost.py          parameters, FLOPs and activation memory of the embedding, a layer and the head
    partition.py     optimal contiguous stages (min-max by dynamic programming), the naive split, stage costs
    schedule_sim.py  GPipe, 1F1B, interleaved, zero-bubble and DualPipeV timelines and their bubbles
    gantt.py         the timelines drawn as Gantt charts
    stage.py         one stage: a slice of the layers, weights seeded by name
    run.py           `torchrun --nproc-per-node N -m minids.pipeline ...` on torch.distributed.pipelining
    session.py       what each rank does in that run
"""

from .cost import COST_KINDS, Cost, embedding_cost, head_cost, in_layer_units, layer_cost, module_costs
from .gantt import plot_timeline
from .partition import (check_ranges, efficiency, min_max_partition, naive_partition, partition, rank_costs,
                        stage_costs)
from .schedule_sim import (SCHEDULES, Op, Timeline, bubble_fraction, published_bubble, rank_orders, rank_stages,
                           simulate, stage_rank)
from .stage import StageModule, build_stage, init_by_name

__all__ = [
    "COST_KINDS", "Cost", "embedding_cost", "head_cost", "in_layer_units", "layer_cost", "module_costs",
    "plot_timeline", "check_ranges", "efficiency", "min_max_partition", "naive_partition", "partition",
    "rank_costs", "stage_costs", "SCHEDULES", "Op", "Timeline", "bubble_fraction", "published_bubble", "rank_orders",
    "rank_stages", "simulate", "stage_rank", "StageModule", "build_stage",
    "init_by_name",
]
