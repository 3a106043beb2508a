"""benchmarks/bench_window.py on a CPU at toy size: every record it writes, and the KV-cache numbers of FACTS."""

import importlib.util
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_window", ROOT / "benchmarks" / "bench_window.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_run_writes_every_record(tmp_path):
    _load().main(["--small", "--device", "cpu", "--out", str(tmp_path), "--warmup", "0", "--repeats", "1",
                  "--seq-lens", "64"])
    records = json.loads((tmp_path / "window_cpu_small.json").read_text())
    timed = [r for r in records if r["metric"].startswith("attention_")]
    assert {(r["variant"], r["metric"]) for r in timed} == {
        (v, m) for v in ("window_flex", "full_sdpa", "full_flex", "window_sdpa_mask")
        for m in ("attention_forward_ms", "attention_forward_backward_ms")}
    for r in timed:
        assert r["value"] is not None and r["value"] > 0, r.get("error")
        assert r["seq_len"] == 64 and r["batch"] == 1 and r["unit"] == "ms"
        assert r["window"] == (32 if r["variant"].startswith("window") else None)
        assert r["kernel"] in ("flex", "sdpa") and "command" in r and "device" in r
    # On a CPU FlexAttention has no backward: the record says that SDPA ran instead.
    assert {r["kernel"] for r in timed if r["metric"] == "attention_forward_backward_ms"} == {"sdpa"}

    cache = {(r["model"], r["seq_len"], r["window"]): r["value"] for r in records if r["metric"] == "kv_cache_gib"}
    assert len(cache) == 2 * 6 * 2
    # FACTS section 9: the 67B at 128K tokens, 47.5 GiB with full attention, 1.48 GiB with W = 4096.
    assert round(cache["deepseek-llm-67b", 131072, None], 1) == 47.5
    assert round(cache["deepseek-llm-67b", 131072, 4096], 2) == 1.48
    assert cache["deepseek-llm-7b", 4096, 4096] == cache["deepseek-llm-7b", 4096, None]  # T <= W: the same
    assert cache["deepseek-llm-7b", 131072, 4096] == cache["deepseek-llm-7b", 4096, None]  # bounded by W
