"""What every experiment's command line checks before the first training step.

A number that cannot be right (--workers 0, --steps -5, no seeds) is a usage error from argparse (exit
status 2, no results file written), through the argument types below; and the results path is checked
before any work (`check_out`), so that a path under a regular file or a file that is not a results file
fails in a second, not after the run has spent its ten minutes.
"""

from __future__ import annotations

import argparse
import os


def _number(kind, test, says: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {says}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"must be {says}, got {text}")
        return value
    parse.__name__ = says  # argparse names the type in some messages
    return parse


positive_int = _number(int, lambda v: v >= 1, "an int >= 1")
nonnegative_int = _number(int, lambda v: v >= 0, "an int >= 0")
positive_float = _number(float, lambda v: v > 0 and v != float("inf"), "a positive number")
nonnegative_float = _number(float, lambda v: v >= 0 and v != float("inf"), "a number >= 0")  # deadlines: 0 = stop


def check_out(parser: argparse.ArgumentParser, path: str | os.PathLike, merge: bool = False) -> None:
    """parser.error (exit 2) if the results file at `path` could not or must not be written (results.py's
    check_json_target), or if --merge would read a file that is damaged."""
    from ..files import read_json
    from ..results import check_json_target

    if merge and os.path.isfile(path):
        try:
            read_json(path, what="results file")
        except ValueError as exc:
            parser.error(f"--merge: {exc}")
    try:
        check_json_target(path)
    except OSError as exc:
        parser.error(str(exc))


def seed_list(text: str) -> tuple[int, ...]:
    """A comma-separated list of seeds (ints >= 0), at least one."""
    seeds = [s.strip() for s in text.split(",") if s.strip()]
    if not seeds:
        raise argparse.ArgumentTypeError(f"needs at least one seed (comma-separated ints), got {text!r}")
    return tuple(nonnegative_int(s) for s in seeds)
