"""The course's map: the main chapters in order, the labs and solutions beside each, how long each takes to read
and how long it takes to run on a CPU.

Chapter 00 and the README draw their tables from here, so the map and the folder agree:

    from minids.course import course_map
    for stop in course_map():
        print(stop.number, stop.title, stop.read_minutes, stop.labs)

Nothing is listed by hand: a main chapter is `notebooks/NN_name.ipynb`, its labs are `notebooks/labs/NN_*.ipynb`
and its solutions `notebooks/solutions/NN_name_solutions.ipynb`. The minutes to read follow one stated rule
(READ_RULE); the seconds to run are measured by

    python -m minids.course --time        # runs every notebook once, writes data/results/notebook_seconds.json
    python -m minids.course --time --save # the same, keeping each executed notebook (re-executes the course)
    python -m minids.course --readme      # writes the map into README.md between its course-map markers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from .paths import PROJECT_ROOT
from .results import write_json_atomic

NOTEBOOKS = PROJECT_ROOT / "notebooks"
SECONDS_FILE = PROJECT_ROOT / "data" / "results" / "notebook_seconds.json"
README = PROJECT_ROOT / "README.md"
MAP_START, MAP_END = "<!-- course-map: made by python -m minids.course --readme -->", "<!-- /course-map -->"
# A reader's pace through technical prose with code to run: 150 words of markdown or 15 lines of code a minute.
WORDS_PER_MINUTE, CODE_LINES_PER_MINUTE = 150, 15
READ_RULE = f"{WORDS_PER_MINUTE} words of text or {CODE_LINES_PER_MINUTE} lines of code a minute"


@dataclass
class Notebook:
    path: Path  # inside notebooks/
    title: str  # the first heading, without its number
    read_minutes: int
    run_seconds: float | None  # measured by `python -m minids.course --time`; None before it ran

    @property
    def rel(self) -> str:
        """The path from the repository root, as links in the README write it."""
        return self.path.relative_to(PROJECT_ROOT).as_posix()


@dataclass
class Stop:
    """One main chapter and what sits beside it."""

    number: str  # "00", "00a", "01", ...
    chapter: Notebook
    labs: list[Notebook] = field(default_factory=list)
    solutions: Notebook | None = None


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def notebook_title(path: Path) -> str:
    """The notebook's first Markdown heading, without the leading number and separator ("01 · RMSNorm" -> "RMSNorm")."""
    for cell in _cells(path):
        if cell["cell_type"] == "markdown":
            match = re.search(r"^#\s+(.+)$", "".join(cell["source"]), re.M)
            if match:
                return re.sub(r"^[0-9]+[a-z]?\s*[·:.\-–]\s*", "", match.group(1)).strip()
    return path.stem


def read_minutes(path: Path) -> int:
    """Minutes to read a notebook by READ_RULE: its Markdown words and its non-empty lines of code."""
    words = lines = 0
    for cell in _cells(path):
        text = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            words += len(text.split())
        elif cell["cell_type"] == "code":
            lines += sum(1 for line in text.splitlines() if line.strip())
    return max(1, round(words / WORDS_PER_MINUTE + lines / CODE_LINES_PER_MINUTE))


def _seconds() -> dict[str, float]:
    if not SECONDS_FILE.exists():
        return {}
    return json.loads(SECONDS_FILE.read_text(encoding="utf-8"))["seconds"]


def _notebook(path: Path, seconds: dict[str, float]) -> Notebook:
    rel = path.relative_to(PROJECT_ROOT).as_posix()
    return Notebook(path, notebook_title(path), read_minutes(path), seconds.get(rel))


def course_map() -> list[Stop]:
    """The main chapters in course order (by their number prefix), each with its labs and solutions."""
    seconds = _seconds()
    stops = []
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb")):
        number = path.stem.split("_", 1)[0]
        labs = sorted((NOTEBOOKS / "labs").glob(f"{number}_*.ipynb"))
        solutions = NOTEBOOKS / "solutions" / f"{path.stem}_solutions.ipynb"
        stops.append(Stop(number, _notebook(path, seconds), [_notebook(p, seconds) for p in labs],
                          _notebook(solutions, seconds) if solutions.exists() else None))
    return stops


def all_notebooks() -> list[Path]:
    """Every notebook a learner can open (main chapters, labs, solutions), in course order."""
    out = []
    for stop in course_map():
        out += [stop.chapter.path, *(lab.path for lab in stop.labs)]
        out += [stop.solutions.path] if stop.solutions else []
    return out


def map_table(stops: list[Stop] | None = None, links_from: Path | None = None) -> str:
    """The course as a Markdown table: main path, minutes to read, seconds to run, labs and solutions beside it.

    Links are relative to `links_from` (default: the repository root, as in the README; chapter 00 passes
    NOTEBOOKS, the folder it lives in)."""
    stops = course_map() if stops is None else stops
    start = PROJECT_ROOT if links_from is None else Path(links_from)

    def link(nb: Notebook) -> str:
        return Path(os.path.relpath(nb.path, start)).as_posix()

    def secs(nb: Notebook) -> str:
        return "—" if nb.run_seconds is None else f"{nb.run_seconds:.0f} s"

    rows = ["| step | chapter | read | run (CPU) | side trips |", "|---|---|---|---|---|"]
    for stop in stops:
        side = [f"lab: [{lab.title}]({link(lab)}) ({lab.read_minutes} min, {secs(lab)})" for lab in stop.labs]
        if stop.solutions:
            side.append(f"[solutions]({link(stop.solutions)})")
        rows.append(f"| {stop.number} | [{stop.chapter.title}]({link(stop.chapter)}) | {stop.chapter.read_minutes} min "
                    f"| {secs(stop.chapter)} | {'; '.join(side) or '—'} |")
    return "\n".join(rows)


def _coalesce_streams(nb) -> None:
    """Join each cell's consecutive stdout (or stderr) pieces into one output, as `jupyter nbconvert --execute`
    stores them: a streamed generation is one block of text, not a piece per token."""
    for cell in nb.cells:
        merged = []
        for out in cell.get("outputs", []):
            if (merged and out.get("output_type") == "stream" and merged[-1].get("output_type") == "stream"
                    and merged[-1].get("name") == out.get("name")):
                merged[-1]["text"] += out["text"]
            else:
                merged.append(out)
        if "outputs" in cell:
            cell["outputs"] = merged


def time_notebooks(paths: list[Path], timeout: int = 600, save: bool = False) -> dict[str, float]:
    """Run each notebook once in a fresh kernel, as nbval does, and return its wall seconds; with save=True the
    executed notebook replaces the file (atomically), as `jupyter nbconvert --execute --inplace` would."""
    import nbformat
    from nbclient import NotebookClient

    seconds = {}
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        NotebookClient(nb, timeout=timeout, resources={"metadata": {"path": str(path.parent)}}).execute()
        seconds[path.relative_to(PROJECT_ROOT).as_posix()] = round(time.perf_counter() - start, 1)
        if save:
            _coalesce_streams(nb)
            tmp = path.with_suffix(".ipynb.tmp")
            nbformat.write(nb, tmp)
            os.replace(tmp, path)
        print(f"{seconds[path.relative_to(PROJECT_ROOT).as_posix()]:7.1f} s  {path.relative_to(PROJECT_ROOT)}",
              flush=True)
    return seconds


def readme_map(text: str) -> str:
    """The map block of a README's text (between MAP_START and MAP_END), or a clear error if it has none."""
    if MAP_START not in text or MAP_END not in text:
        raise ValueError(f"README.md has no course map: it needs the lines {MAP_START!r} and {MAP_END!r}")
    return text.split(MAP_START, 1)[1].split(MAP_END, 1)[0].strip("\n")


def write_readme_map() -> None:
    """Replace README.md's map block with map_table(), atomically."""
    text = README.read_text(encoding="utf-8")
    readme_map(text)  # the markers must be there
    before, _, rest = text.partition(MAP_START)
    after = rest.partition(MAP_END)[2]
    new_text = f"{before}{MAP_START}\n{map_table()}\n{MAP_END}{after}"
    tmp = README.with_suffix(".md.tmp")
    tmp.write_text(new_text, encoding="utf-8")
    os.replace(tmp, README)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minids.course", description=__doc__.split("\n\n")[0])
    parser.add_argument("--time", action="store_true", help=f"run every notebook once and write {SECONDS_FILE.name}")
    parser.add_argument("--save", action="store_true", help="with --time: keep each executed notebook's outputs")
    parser.add_argument("--readme", action="store_true", help="write the map into README.md")
    args = parser.parse_args(argv)
    if args.time:
        import torch

        seconds = time_notebooks(all_notebooks(), save=args.save)
        write_json_atomic(SECONDS_FILE, {
            "command": "python -m minids.course --time",
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
            "date": time.strftime("%Y-%m-%d"), "seconds": seconds})
        print(f"wrote {SECONDS_FILE.relative_to(PROJECT_ROOT)}")
    if args.readme:
        write_readme_map()
        print(f"wrote the map into {README.name}")
    print(map_table())


if __name__ == "__main__":
    main()
