"""Checkers for the chapters' exercises: one `check_<what>` per exercise where the learner writes code.

Each chapter's checkers live in their own file (ch01.py for chapter 01, ...), built on the one contract in
_contract.py: a correct answer prints one line and returns True, a wrong one raises AssertionError with a hint,
an untouched stub (`raise NotImplementedError`) prints "not attempted yet" and returns False.

Every `check_*` of every chapter file is importable from here:

    from minids.exercises import check_rotate_half
"""

from __future__ import annotations

import importlib
import pkgutil

from ._contract import checker, expect_close, expect_equal, expect_shape

__all__ = ["checker", "expect_close", "expect_equal", "expect_shape"]

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name.startswith("ch"):
        _module = importlib.import_module(f"{__name__}.{_info.name}")
        for _name in dir(_module):
            if _name.startswith("check_"):
                globals()[_name] = getattr(_module, _name)
                __all__.append(_name)
