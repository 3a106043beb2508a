"""The window_reach experiment: the recall_d task, the tiny setting end to end, and the verdict rules."""

import json

import pytest
import torch

from minids.data.recall import RecallTask
from minids.experiments import window_reach as wr


def test_recall_task_places_one_value_and_scores_every_later_position():
    task = RecallTask(n=20, max_distance=12, n_fillers=3, n_values=5)
    inputs, targets, value_pos = task.sample(64, torch.Generator().manual_seed(0))
    assert inputs.shape == targets.shape == (64, 20) and task.vocab_size == 8 and task.chance == 0.2
    assert int(value_pos.max()) <= 20 - 1 - 12  # every d up to max_distance fits in every row
    for row in range(64):
        v = int(value_pos[row])
        value = int(inputs[row, v])
        assert value >= 3 and (inputs[row] >= 3).sum() == 1  # exactly one value token, the rest filler
        assert (targets[row, : v + 1] == -100).all() and (targets[row, v + 1 :] == value).all()
    again = task.batches(8, seed=3)(5)
    assert torch.equal(again[0], task.batches(8, seed=3)(5)[0])  # a function of (seed, step)


def test_evaluate_counts_accuracy_per_distance():
    task = RecallTask(n=12, max_distance=8, n_fillers=2, n_values=3)
    eval_set = task.eval_set(16)

    class Oracle(torch.nn.Module):  # names the value correctly up to distance 3, then a wrong token
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            inputs, _, value_pos = eval_set
            d = torch.arange(12)[None] - value_pos[:, None]
            value = inputs.gather(1, value_pos[:, None])
            answer = torch.where((d >= 1) & (d <= 3), value, torch.zeros_like(value))
            return torch.nn.functional.one_hot(answer, task.vocab_size).float()

    acc = task.evaluate(Oracle(), eval_set)["accuracy_by_d"]
    assert list(acc) == list(range(1, 9))
    assert [acc[d] for d in range(1, 9)] == [1.0] * 3 + [0.0] * 5
    assert wr.practical_reach(acc) == 3
    assert wr.practical_reach({1: 0.5, 2: 1.0}) == 0


def test_tiny_setting_writes_every_record_field(tmp_path):
    out = tmp_path / "window_reach_cpu.json"
    lines = []
    wr.run_experiment(wr.SETTINGS["tiny"], "cpu", str(out), log=lines.append)
    records = json.loads(out.read_text())
    assert [r["record"] for r in records] == ["meta", "train", "train", "verdict"]
    for r in records[1:3]:
        for field in ("n_layers", "window", "seed", "d", "accuracy", "theoretical_reach", "practical_reach",
                      "steps", "device", "device_name", "chance", "curve", "final_loss", "train_seconds"):
            assert field in r, field
        assert r["theoretical_reach"] == r["n_layers"] * (r["window"] - 1)
        assert r["d"] == list(range(1, 17)) and len(r["accuracy"]) == 16
        assert all(0.0 <= a <= 1.0 for a in r["accuracy"])
    assert {r["n_layers"] for r in records[1:3]} == {1, 2}
    assert records[-1]["verdict"] in ("undertrained", "leak", "uses its span", "falls short")
    assert any("verdict" in line for line in lines)


def run(n_layers, seed, acc, window=8):
    ds = list(range(1, 81))
    return {"record": "train", "task": "recall_d", "n_layers": n_layers, "seed": seed, "window": window,
            "theoretical_reach": n_layers * (window - 1), "chance": 1 / 16, "d": ds, "accuracy": [acc(d) for d in ds]}


def family(reach_of, beyond=0.06, inside=1.0):
    return [run(L, s, lambda d, L=L: inside if d <= reach_of(L) else beyond) for L in (1, 2, 4, 8) for s in range(3)]


def test_verdict_uses_its_span_and_falls_short():
    v = wr.verdict(family(lambda L: L * 7))
    assert v["gate"]["passed"] and v["leak"]["passed"] and v["verdict"] == "uses its span"
    assert v["practical_reach"] == {1: 7, 2: 14, 4: 28, 8: 56}
    v = wr.verdict(family(lambda L: min(L * 7, 30)))  # L = 8 carries the value only 30 of 56 positions
    assert v["verdict"] == "falls short" and "L8: R = 30 of 56" in v["reason"] and "L4" not in v["reason"]


def test_verdict_gate_and_leak():
    v = wr.verdict(family(lambda L: L * 7, inside=0.8))
    assert v["verdict"] == "undertrained" and "inside one window" in v["reason"]
    v = wr.verdict(family(lambda L: L * 7, beyond=0.3))  # above chance where the theory says impossible
    assert v["verdict"] == "leak"
    assert wr.verdict([])["verdict"] == "undertrained"
