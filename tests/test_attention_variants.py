"""The MHA / GQA / MLA study: its shapes match in parameters, its rules decide as written, and both parts run
end to end on a CPU (the quick setting; the cuda setting is the same code)."""

import pytest
import torch

from minids import count_params, kv_cache_bytes
from minids.experiments import attention_variants as av


@pytest.mark.parametrize("name", list(av.SETTINGS))
def test_variants_match_mha_in_non_embedding_parameters(name):
    s = av.SETTINGS[name][0]
    target = count_params(av.variant_config(s, "mha")).non_embedding
    configs = {v: av.matched_config(s, v) for v in av.VARIANTS}
    for cfg in configs.values():
        assert abs(count_params(cfg).non_embedding / target - 1) <= 0.03
    assert configs["gqa"].n_kv_heads == s.n_heads // 4 and configs["mla"].is_mla and not configs["mha"].is_mla
    kv = {v: kv_cache_bytes(c, 1) for v, c in configs.items()}
    assert kv["mha"] > kv["mla"] and kv["mha"] == 4 * kv["gqa"]


def runs(means: dict, spread: float) -> list[dict]:
    return [{"variant": v, "seed": i, "status": "done", "final": {"val_bpb": m + spread * (i - 1)}}
            for v, m in means.items() for i in range(3)]


def test_verdict_follows_the_rules():
    # seed std = spread; margin = 2 x spread = 0.02
    v = av.verdict(runs({"mha": 1.00, "gqa": 1.05, "mla": 1.015}, 0.01), ngram_bpb=1.6, seeds=(0, 1, 2))
    assert v["gate_passed"] and v["mla_vs_mha"] == "MLA matches MHA" and v["mla_vs_gqa"] == "MLA beats GQA"
    v = av.verdict(runs({"mha": 1.00, "gqa": 1.03, "mla": 1.025}, 0.01), ngram_bpb=1.6, seeds=(0, 1, 2))
    assert v["mla_vs_mha"] == "not decided" and v["mla_vs_gqa"] == "not decided"
    assert v["diff_mha"] == pytest.approx(0.025) and v["margin_mha"] == pytest.approx(0.02)
    v = av.verdict(runs({"mha": 1.00, "gqa": 1.05, "mla": 1.0}, 0.01), ngram_bpb=1.0, seeds=(0, 1, 2))
    assert not v["gate_passed"] and v["mla_vs_mha"].startswith("no verdict: gate failed")
    partial = runs({"mha": 1.00, "gqa": 1.05, "mla": 1.0}, 0.01)[:-1]
    assert av.verdict(partial, 1.6, (0, 1, 2))["mla_vs_gqa"] == "no verdict: runs missing"


def test_cost_part_times_every_variant_against_its_floor(tmp_path):
    rec = av.run_cost("quick", "cpu", tmp_path / "cost.json", log=lambda m: None)
    c = av.SETTINGS["quick"][1]
    assert len(rec["points"]) == 5 * len(c.batches) * len(c.contexts)
    assert all(p["seconds"] > 0 and p["floor_s"] > 0 for p in rec["points"])
    per_token = {p["variant"]: p["kv_bytes_per_token"] for p in rec["points"]}
    assert per_token["MLA absorbed"] == 2 * (4 * 8 + 4) and per_token["MHA"] == 2 * 2 * 64
    fit = {f["model"]: f["sequences"] for f in rec["fit_4k"]}
    assert fit["V2-Lite (MLA)"] > fit["GQA 2:1 variant"] > fit["MHA variant"]


def test_quality_part_runs_and_writes_a_verdict(tmp_path, monkeypatch):
    from dataclasses import replace
    q, c = av.SETTINGS["quick"]
    monkeypatch.setitem(av.SETTINGS, "quick", (replace(q, steps=4, seeds=(0, 1)), c))
    rec = av.run_quality("quick", "cpu", tmp_path / "q.json", log=lambda m: None)
    assert [(r["variant"], r["seed"]) for r in rec["runs"]] == [(v, s) for s in (0, 1) for v in av.VARIANTS]
    assert all(r["tokens"] == 4 * q.batch * q.seq_len for r in rec["runs"])
    assert rec["verdict"]["complete"] and "mla_vs_mha" in rec["verdict"]
    assert (tmp_path / "q.json").exists()
