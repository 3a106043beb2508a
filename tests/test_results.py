import json

import pytest

from minids.paths import PROJECT_ROOT
from minids.results import atomic_folder, median_time, read_results, write_json_atomic


def test_write_json_atomic_replaces_or_keeps_the_old_file(tmp_path):
    path = tmp_path / "sub" / "r.json"
    write_json_atomic(path, [{"a": 1}])
    assert json.loads(path.read_text()) == [{"a": 1}]
    with pytest.raises(TypeError):
        write_json_atomic(path, [{"a": object()}])  # not serialisable: fails half-way through writing
    assert json.loads(path.read_text()) == [{"a": 1}]  # the old file survives whole
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # and no temp file is left behind


def test_atomic_folder_replaces_the_folder_whole_or_not_at_all(tmp_path):
    target = tmp_path / "adapter"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "a.txt").write_text("two")
            raise RuntimeError("crash half-way")
    assert (target / "a.txt").read_text() == "one"  # the old folder survives whole
    with atomic_folder(target) as tmp:
        (tmp / "b.txt").write_text("three")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # replaced, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no temporary folder left behind


def test_median_time_is_the_median_of_the_repeats(monkeypatch):
    import minids.results as results

    clock = iter([0.0, 1.0, 10.0, 13.0, 20.0, 20.5])  # durations 1.0, 3.0, 0.5 -> median 1.0
    monkeypatch.setattr(results.time, "perf_counter", lambda: next(clock))
    calls = []
    assert median_time(lambda: calls.append(1), "cpu", warmup=2, repeats=3) == 1.0
    assert len(calls) == 5


def test_project_path_finds_the_checkout_from_anywhere(tmp_path, monkeypatch):
    from minids.paths import project_path

    monkeypatch.chdir(tmp_path)  # a chapter opened from another folder
    assert (project_path("data", "results") / "hop_k_cuda.json").is_file()
    assert project_path("benchmarks", "results").is_dir()
    with pytest.raises(FileNotFoundError, match="pip install -e"):
        project_path("data", "no_such_file.json")
    assert not project_path("no_such", must_exist=False).exists()


def test_say_wraps_long_lines_only(capsys):
    from minids import say

    say("short line", "kept")
    say("word " * 40 + "end")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "short line kept"
    assert len(lines) >= 3 and all(len(line) <= 100 for line in lines[1:]) and lines[2].startswith("    word")
    assert " ".join(line.strip() for line in lines[1:]) == ("word " * 40 + "end")


def test_read_results_returns_the_json_or_says_what_is_missing(capsys):
    there = PROJECT_ROOT / "data" / "results" / "finetune_cuda.json"
    assert read_results(there, "any")["meta"]["setting"]["layers"] == [2, 8]
    assert read_results(PROJECT_ROOT / "data" / "results" / "nothing.json", "python make_it.py") is None
    assert capsys.readouterr().out == ("not measured yet: data/results/nothing.json\n"
                                       "    (command: python make_it.py)\n")
