"""The course's shape, checked on the committed notebooks: the map finds every chapter, lab and solutions
notebook; every main chapter stays within the limits a learner can finish in one sitting and ends with exercises."""

from __future__ import annotations

import json
import re

import pytest

import minids.course as course

MAIN = sorted(course.NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb"))
# A main chapter is one idea finished in 20-30 minutes: these are its limits, measured on the committed notebook.
LIMITS = dict(cells=45, code_lines=200, longest_cell=20, md_words=3200, output_lines=90)


def _measure(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    src = ["".join(c["source"]) for c in code]
    return dict(cells=len(nb["cells"]), code_lines=sum(len(s.splitlines()) for s in src),
                longest_cell=max([len(s.splitlines()) for s in src] or [0]),
                md_words=sum(len("".join(c["source"]).split()) for c in nb["cells"] if c["cell_type"] == "markdown"),
                output_lines=sum(len("".join(o.get("text", "")).splitlines()) for c in code for o in c.get("outputs", [])))


@pytest.mark.parametrize("path", MAIN, ids=[p.stem for p in MAIN])
def test_main_chapter_within_limits(path):
    measured = _measure(path)
    over = {k: f"{v} > {LIMITS[k]}" for k, v in measured.items() if v > LIMITS[k]}
    assert not over, f"{path.name} is over the main-chapter limits: {over}"


@pytest.mark.parametrize("path", [p for p in MAIN if not p.stem.startswith("00_")],
                         ids=[p.stem for p in MAIN if not p.stem.startswith("00_")])
def test_every_chapter_after_00_has_exercises_and_solutions(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    markdown = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert re.search(r"^## Exercises", markdown, re.M), f"{path.name} has no '## Exercises' section"
    assert (course.NOTEBOOKS / "solutions" / f"{path.stem}_solutions.ipynb").exists(), f"{path.name} has no solutions"


def _write_nb(path, cells):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


def _md(text):
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def test_map_finds_labs_and_solutions_and_applies_the_reading_rule(tmp_path, monkeypatch):
    monkeypatch.setattr(course, "PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(course, "NOTEBOOKS", tmp_path / "notebooks")
    monkeypatch.setattr(course, "SECONDS_FILE", tmp_path / "seconds.json")
    words = " ".join(["word"] * (course.WORDS_PER_MINUTE * 4))  # 4 minutes of text
    code = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": 1,
            "source": "\n".join(["x = 1"] * (course.CODE_LINES_PER_MINUTE * 2))}  # 2 minutes of code
    _write_nb(tmp_path / "notebooks" / "01_norm.ipynb", [_md("# 01 · RMSNorm\n" + words), code])
    _write_nb(tmp_path / "notebooks" / "02_rope.ipynb", [_md("# 02 · RoPE")])
    _write_nb(tmp_path / "notebooks" / "labs" / "01_norm_lab.ipynb", [_md("# Lab: placement")])
    _write_nb(tmp_path / "notebooks" / "solutions" / "01_norm_solutions.ipynb", [_md("# Solutions")])
    (tmp_path / "seconds.json").write_text(json.dumps({"seconds": {"notebooks/01_norm.ipynb": 12.3}}))

    stops = course.course_map()
    assert [s.number for s in stops] == ["01", "02"]
    first, second = stops
    assert first.chapter.title == "RMSNorm" and first.chapter.read_minutes == 6 + 0  # 4 + 2, rounded
    assert [lab.title for lab in first.labs] == ["Lab: placement"] and first.solutions is not None
    assert second.labs == [] and second.solutions is None and second.chapter.run_seconds is None
    table = course.map_table(stops)
    assert "| 01 | [RMSNorm](notebooks/01_norm.ipynb) | 6 min | 12 s |" in table
    assert "lab: [Lab: placement](notebooks/labs/01_norm_lab.ipynb)" in table
    assert "| 02 | [RoPE](notebooks/02_rope.ipynb) | 1 min | — | — |" in table
    from_notebooks = course.map_table(stops, links_from=tmp_path / "notebooks")
    assert "[RMSNorm](01_norm.ipynb)" in from_notebooks and "(labs/01_norm_lab.ipynb)" in from_notebooks
    assert [p.name for p in course.all_notebooks()] == ["01_norm.ipynb", "01_norm_lab.ipynb",
                                                         "01_norm_solutions.ipynb", "02_rope.ipynb"]


def test_readme_map_is_the_current_map():
    text = course.README.read_text(encoding="utf-8")
    assert course.readme_map(text) == course.map_table(), (
        "README.md's course map is out of date: run `python -m minids.course --readme`")


def test_saved_streams_are_joined_as_nbconvert_stores_them():
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=t) for t in ("a", "b\n", "c")]
    cell.outputs.insert(2, nbformat.v4.new_output("stream", name="stderr", text="warn\n"))
    nb.cells = [cell]
    course._coalesce_streams(nb)
    assert [(o["name"], o["text"]) for o in nb.cells[0].outputs] == [("stdout", "ab\n"), ("stderr", "warn\n"),
                                                                      ("stdout", "c")]
