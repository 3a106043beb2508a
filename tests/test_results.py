import json

import pytest

from minids.results import median_time, write_json_atomic


def test_write_json_atomic_replaces_or_keeps_the_old_file(tmp_path):
    path = tmp_path / "sub" / "r.json"
    write_json_atomic(path, [{"a": 1}])
    assert json.loads(path.read_text()) == [{"a": 1}]
    with pytest.raises(TypeError):
        write_json_atomic(path, [{"a": object()}])  # not serialisable: fails half-way through writing
    assert json.loads(path.read_text()) == [{"a": 1}]  # the old file survives whole
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # and no temp file is left behind


def test_median_time_is_the_median_of_the_repeats(monkeypatch):
    import minids.results as results

    clock = iter([0.0, 1.0, 10.0, 13.0, 20.0, 20.5])  # durations 1.0, 3.0, 0.5 -> median 1.0
    monkeypatch.setattr(results.time, "perf_counter", lambda: next(clock))
    calls = []
    assert median_time(lambda: calls.append(1), "cpu", warmup=2, repeats=3) == 1.0
    assert len(calls) == 5
