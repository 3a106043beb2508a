"""The transfer study's answer figure, drawn from the committed results."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from minids.experiments import finetune as experiment  # noqa: E402
from minids.paths import project_path  # noqa: E402
from minids.plots.finetune import transfer_answer_figure  # noqa: E402
from minids.results import read_results  # noqa: E402


@pytest.fixture(scope="module")
def verdict_and_meta():
    results = read_results(project_path("data", "results", "finetune_cuda.json"), "python -m minids.experiments.finetune")
    return experiment.verdict(results), results["meta"]


def test_answer_figure_shows_every_seed_and_the_resolved_cells(verdict_and_meta):
    verdict, meta = verdict_and_meta
    chance = {"hop_k": meta["hop_k"]["chance"], "names": meta["names"]["chance"]}
    names = {int(L): s["name"] for L, s in meta["shapes"].items()}
    fig = transfer_answer_figure(verdict, chance, names, experiment.GATE_ABOVE_CHANCE)
    hop, nam = fig.axes
    for ax, task in ((hop, "hop_k"), (nam, "names")):
        assert ax.get_title() == task and ax.get_ylabel() and ax.get_xlabel() == "fine-tuning method"
        points = sum(len(c.get_offsets()) for c in ax.collections)
        assert points == 3 * 2 * 3  # 3 methods x 2 shapes x 3 seeds
        n_resolved = sum(1 for m in ("full", "lora-attn", "lora-all") if verdict["cells"][f"{task} {m}"]["better"])
        assert sum("resolved" in t.get_text() for t in ax.texts) == n_resolved
    labels = [t.get_text() for t in nam.get_legend().get_texts()]
    assert any(lab.startswith("gate bar") for lab in labels) and any(lab.startswith("chance") for lab in labels)
    assert len(labels) == 6 and len(hop.get_legend().get_texts()) == 5
    assert verdict["verdict"] in fig._suptitle.get_text()


def test_an_empty_verdict_is_refused():
    with pytest.raises(ValueError, match="no cells"):
        transfer_answer_figure({"cells": {}, "shapes": {}}, {}, {})
