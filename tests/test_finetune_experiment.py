"""The fine-tuning experiment (minids.experiments.finetune): the H200 plan, a tiny run end to end, the rules."""

import json

import pytest

from minids.experiments import finetune as ft


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("results") / "finetune_cpu.json"
    setting = ft.replace(ft.SETTINGS["tiny"], names_ft_steps=6)  # the names task can train longer than hop_k
    returned = ft.run_experiment(setting, "cpu", str(out), log=lambda s: None)
    with open(out) as f:
        return returned, json.load(f)


def test_the_cuda_plan_is_parameter_matched_and_complete():
    setting = ft.SETTINGS["cuda"]
    shapes = {L: ft.shape_of(setting, L) for L in setting.layers}
    wide, deep = ft.wide_and_deep(setting)
    assert deep >= 4 * wide and all(abs(s.budget_error) <= 0.03 for s in shapes.values())
    assert {s.config.d_model for s in shapes.values()} == {setting.d_model}
    assert shapes[wide].config.d_ff > 4 * shapes[deep].config.d_ff  # depth bought with FFN width
    assert len(setting.seeds) >= 3 and set(setting.tasks) == set(ft.TASKS) and set(setting.methods) == set(ft.METHODS)
    assert setting.deadline_s <= 570 and setting.workers > 1  # one device command is at most 600 s
    rates = {(m, i): ft.learning_rate(setting, m, i) for m, i in
             (("full", "pretrained"), ("full", "scratch"), ("lora-all", "pretrained"))}
    assert rates["full", "pretrained"] < rates["full", "scratch"]  # fine-tuning runs at a lower rate


def test_tiny_run_writes_every_record_and_field(tiny):
    returned, saved = tiny
    setting = ft.SETTINGS["tiny"]
    assert saved["verdict"] == returned["verdict"] and saved["incomplete"] == []
    assert [{k: d[k] for k in ft.DETAIL_KEYS} for d in saved["details"]] == \
        [{k: r[k] for k in ft.DETAIL_KEYS} for r in saved["runs"]]
    hop = [d for d in saved["details"] if d["task"] == "hop_k"]
    assert all(set(d["accuracy_by_k"]) == {str(k) for k in range(setting.hop_max + 1)} for d in hop)
    runs, bases = saved["runs"], saved["pretrain"]
    assert len(bases) == len(setting.layers) * len(setting.seeds)
    per_base = len(setting.tasks) * (len(setting.methods) + 1)  # + the scratch control
    assert len(runs) == len(bases) * per_base
    for r in runs:
        assert tuple(r) == ft.RUN_FIELDS
        steps = 6 if r["task"] == "names" else setting.ft_steps
        assert r["steps"] == steps and r["device"] == "cpu" and 0 <= r["value"] <= 1
        assert r["metric"] == {"hop_k": "accuracy", "names": "exact_match"}[r["task"]]
        assert [p["step"] for p in r["curve"]][0] == 0 and r["curve"][-1]["step"] == steps
    loss = {(b["n_layers"], b["seed"]): b["val_loss"] for b in bases}
    for r in runs:
        assert r["pretrain_loss"] == (loss[r["n_layers"], r["seed"]] if r["init"] == "pretrained" else None)
    full = {r["trainable_params"] for r in runs if r["method"] == "full" and r["n_layers"] == 2}
    attn = {r["trainable_params"] for r in runs if r["method"] == "lora-attn" and r["n_layers"] == 2}
    every = {r["trainable_params"] for r in runs if r["method"] == "lora-all" and r["n_layers"] == 2}
    assert len(full) == len(attn) == len(every) == 1 and min(attn) < min(every) < min(full)
    meta = saved["meta"]
    assert meta["corpus"]["unigram_val_loss"] > 0 and 0 <= meta["names"]["chance"] <= 1
    assert meta["hop_k"]["chance"] == pytest.approx(1 / 3) and meta["total_seconds"] > 0
    assert saved["verdict"]["verdict"] in ("invalid", "not decided")  # nothing is learned in 4 steps


def test_a_passed_deadline_records_incomplete_runs_and_a_valid_file(tmp_path):
    out = tmp_path / "finetune_cpu.json"
    setting = ft.SETTINGS["tiny"]
    ft.run_experiment(ft.replace(setting, deadline_s=0.0, tasks=("hop_k",)), "cpu", str(out), log=lambda s: None)
    saved = json.loads(out.read_text())
    assert saved["runs"] == [] and saved["pretrain"] == []
    kinds = sorted((r["kind"], r["incomplete"]) for r in saved["incomplete"])
    n_bases = len(setting.layers) * len(setting.seeds)
    assert kinds.count(("pretrain", "not started: the deadline had passed")) == n_bases
    assert sum(1 for k, why in kinds if why == "its base did not finish") == n_bases * len(setting.methods)
    assert saved["verdict"]["verdict"] == "not decided"  # no shape has a single record


# ---- the rules on made-up records ------------------------------------------------------------------------
def made_up(value, base_loss=3.0, seeds=(0, 1, 2), chance=0.0, k1=0.9):
    """A results dict: value(task, method, init, n_layers, seed) for every run of a 2-vs-8-layer family."""
    runs = [{"task": t, "method": m, "init": i, "n_layers": L, "seed": s, "value": value(t, m, i, L, s)}
            for t in ft.TASKS for L in (2, 8) for s in seeds
            for m, i in [(m, "pretrained") for m in ft.METHODS] + [("full", "scratch")]]
    bases = [{"n_layers": L, "seed": s, "val_loss": base_loss + 0.01 * s} for L in (2, 8) for s in seeds]
    meta = {"corpus": {"unigram_val_loss": 7.0}, "hop_k": {"chance": 1 / 3}, "names": {"chance": chance}}
    details = [{**{k: r[k] for k in ft.DETAIL_KEYS}, "accuracy_by_k": {"0": 1.0, "1": k1, "2": r["value"]}}
               for r in runs if r["task"] == "hop_k"]
    return {"meta": meta, "pretrain": bases, "runs": runs, "details": details}


def good(deep_bonus=0.0, jitter=0.005):
    def value(t, m, i, L, s):
        if i == "scratch":
            return 0.05 if t == "names" else 0.40
        base = 0.30 if t == "names" else 0.60
        return base + (deep_bonus if L == 8 else 0.0) + jitter * s
    return value


def test_a_clear_deep_advantage_is_the_verdict():
    v = ft.verdict(made_up(good(deep_bonus=0.1)))
    assert v["gate"]["passed"] and v["verdict"] == "deep-narrow transfers better"
    assert all(c["better"] == "deep" for c in v["cells"].values()) and len(v["cells"]) == 6
    assert v["transfer_gain"]["names"]["better"] == "deep"


def test_a_shallow_model_failing_at_k_above_1_is_a_result_not_a_failed_gate():
    def wide_cannot_compose(t, m, i, L, s):
        return 0.36 + 0.005 * s if (t, i, L) == ("hop_k", "pretrained", 2) else good()(t, m, i, L, s)
    v = ft.verdict(made_up(wide_cannot_compose))
    assert v["gate"]["passed"] and v["cells"]["hop_k lora-all"]["better"] == "deep"
    assert v["verdict"] == "partly deep-narrow" and "hop_k" in v["reason"] and "names" not in v["reason"]
    assert v["hop_k_by_k"]["L2 full pretrained"]["1"] == 0.9


def test_equal_shapes_resolve_nothing_and_overlap_is_not_an_effect():
    assert ft.verdict(made_up(good()))["verdict"] == "no shape effect resolved"
    v = ft.verdict(made_up(good(deep_bonus=0.015, jitter=0.01)))  # 0.015 apart, seeds overlapping
    assert v["verdict"] == "no shape effect resolved" and v["cells"]["names full"]["better"] is None


def test_the_wide_shape_can_win_and_mixed_is_reported():
    assert ft.verdict(made_up(good(deep_bonus=-0.1)))["verdict"] == "shallow-wide transfers better"

    def mixed(t, m, i, L, s):
        return good(deep_bonus=0.1 if t == "hop_k" else -0.1)(t, m, i, L, s)
    assert ft.verdict(made_up(mixed))["verdict"] == "mixed"


@pytest.mark.parametrize("breaks, words", [
    (dict(base_loss=7.5), "unigram"),
    (dict(value=lambda t, m, i, L, s: 0.05 if t == "names" else good()(t, m, i, L, s)), "does not beat scratch"),
    (dict(k1=0.4), "at k = 1 0.400 < chance"),
    (dict(value=lambda t, m, i, L, s: 0.04 if t == "names" else good()(t, m, i, L, s)), "exact match 0.040 < chance"),
])
def test_a_failed_gate_means_invalid_whatever_the_cells(breaks, words):
    kwargs = {"value": good(deep_bonus=0.1), **breaks}
    v = ft.verdict(made_up(**kwargs))
    assert not v["gate"]["passed"] and v["verdict"] == "invalid" and words in v["reason"]


def test_upstream_loss_is_compared_lower_is_better():
    results = made_up(good())
    for b in results["pretrain"]:
        b["val_loss"] = 2.5 + 0.01 * b["seed"] if b["n_layers"] == 8 else 2.7 + 0.01 * b["seed"]
    up = ft.verdict(results)["upstream"]
    assert up["better"] == "deep" and up["effect"] == pytest.approx(-0.2)


def test_fewer_than_three_seeds_decide_nothing_even_with_the_gate_passed():
    v = ft.verdict(made_up(good(deep_bonus=0.1), seeds=(0, 1)))
    assert v["gate"]["passed"] and v["verdict"] == "not decided"
    assert f"{ft.MIN_SEEDS} needed" in v["reason"] and len(v["cells"]) == 6  # the cells are still computed


def test_merge_refuses_a_file_made_with_another_setting(tmp_path):
    out = tmp_path / "finetune_cpu.json"
    tiny = ft.replace(ft.SETTINGS["tiny"], tasks=("hop_k",))
    ft.run_experiment(ft.replace(tiny, deadline_s=0.0), "cpu", str(out), log=lambda s: None)
    with pytest.raises(ValueError, match=r"ft_steps: 4 -> 5"):
        ft.run_experiment(ft.replace(tiny, ft_steps=5, deadline_s=0.0), "cpu", str(out), merge=True,
                          log=lambda s: None)
    # how a run is split (seeds, workers, deadline) may differ: that is what --merge is for
    saved = json.loads(out.read_text())["meta"]["setting"]
    assert ft.setting_differences(saved, ft.replace(tiny, seeds=(1, 2), workers=3, deadline_s=9.0)) == []


def test_the_committed_h200_file_was_made_with_todays_cuda_setting():
    from minids.paths import project_path

    with open(project_path("data", "results", "finetune_cuda.json")) as f:
        saved = json.load(f)
    assert ft.setting_differences(saved["meta"]["setting"], ft.SETTINGS["cuda"]) == []


def test_merge_adds_the_seeds_of_a_second_run_to_the_first(tmp_path):
    out = str(tmp_path / "finetune_cpu.json")
    tiny = ft.replace(ft.SETTINGS["tiny"], tasks=("hop_k",), seeds=(0,))
    ft.run_experiment(tiny, "cpu", out, log=lambda s: None)
    first = json.loads((tmp_path / "finetune_cpu.json").read_text())
    ft.run_experiment(ft.replace(tiny, seeds=(1,)), "cpu", out, merge=True, log=lambda s: None)
    merged = json.loads((tmp_path / "finetune_cpu.json").read_text())
    per_seed = len(first["runs"])
    assert sorted({r["seed"] for r in merged["runs"]}) == [0, 1] and len(merged["runs"]) == 2 * per_seed
    assert [r for r in merged["runs"] if r["seed"] == 0] == first["runs"]  # kept as they were
    assert sorted((b["n_layers"], b["seed"]) for b in merged["pretrain"]) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert merged["meta"]["previous_meta"]["setting"]["seeds"] == [0]
    assert merged["meta"]["setting"]["seeds"] == [1] and merged["meta"]["seeds_in_file"] == [0, 1]


def test_cell_runs_are_one_cells_records_in_seed_order_as_the_verdict_reads_them():
    results = made_up(good(deep_bonus=0.1), seeds=(2, 0, 1))
    results["runs"].reverse()  # the file's order is the order runs finished in
    rs = ft.cell_runs(results["runs"], "hop_k", "lora-all", "pretrained", 8)
    assert [r["seed"] for r in rs] == [0, 1, 2]
    assert all((r["task"], r["method"], r["init"], r["n_layers"]) == ("hop_k", "lora-all", "pretrained", 8) for r in rs)
    assert [r["value"] for r in rs] == ft.verdict(results)["cells"]["hop_k lora-all"]["deep"]["values"]
