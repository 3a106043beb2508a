"""show_source: print the real source of a minids object in a notebook, so chapters never re-type code;
say: print with long lines wrapped to the width of a notebook's output area.

show_source can show a whole function or class, one method, a range of its lines, or a named region: the lines
between `# region: NAME` and `# endregion` comments inside it. A region may be marked in several pieces (one
branch here, one line there): they are shown in order, each gap replaced by one comment saying which lines were
left out. That is how a chapter shows the readable path of a method before the branches it has not taught yet
(chapter 03 shows GroupedQueryAttention.forward's region "readable": projections, RoPE, the KV-head repeat and
the einsum attention, without the flex, window, padding and decode branches).
"""

from __future__ import annotations

import inspect
import re

_REGION = re.compile(r"^\s*# region: (\S+)(\s.*)?$")  # a note may follow the name
_END = re.compile(r"^\s*# endregion\s*$")


def source_lines(obj, method: str | None = None) -> tuple[list[str], int, str]:
    """(lines, first line number in the file, file path relative to the package) of obj or obj.method."""
    if method is not None and not hasattr(obj, method):
        raise AttributeError(f"{getattr(obj, '__name__', obj)!r} has no attribute {method!r} to show")
    target = getattr(obj, method) if method else obj
    target = inspect.unwrap(getattr(target, "fget", target))  # properties show their getter
    lines, first = inspect.getsourcelines(target)
    path = inspect.getsourcefile(target) or "?"
    where = path[path.rfind("minids"):] if "minids" in path else path
    return lines, first, where


def regions(lines: list[str]) -> dict[str, list[tuple[int, int]]]:
    """{name: [(a, b), ...]}: the 1-based, inclusive line spans between `# region: name` and `# endregion`
    (the marker lines themselves excluded), in order. Regions do not nest."""
    found: dict[str, list[tuple[int, int]]] = {}
    open_name, open_at = None, 0
    for i, line in enumerate(lines, start=1):
        start, end = _REGION.match(line), _END.match(line)
        if start:
            if open_name is not None:
                raise ValueError(f"line {i}: region {start.group(1)!r} starts inside region {open_name!r} "
                                 f"(opened at line {open_at}); regions do not nest")
            open_name, open_at = start.group(1), i
        elif end:
            if open_name is None:
                raise ValueError(f"line {i}: '# endregion' without a '# region: NAME' before it")
            if i > open_at + 1:
                found.setdefault(open_name, []).append((open_at + 1, i - 1))
            open_name = None
    if open_name is not None:
        raise ValueError(f"region {open_name!r} opened at line {open_at} is never closed by '# endregion'")
    return found


def _is_marker(line: str) -> bool:
    return bool(_REGION.match(line) or _END.match(line))


def select_lines(lines: list[str], first: int, spans: list[tuple[int, int]]) -> str:
    """The lines in `spans` (1-based, inclusive, relative to `lines`); each gap before, between and after them is
    replaced by one comment naming the file lines left out, indented like the first code line it stands for."""
    out: list[str] = []
    shown_to = 0  # last relative line shown so far
    for a, b in [*spans, (len(lines) + 1, len(lines))]:  # the sentinel closes the gap after the last span
        code = [line for line in lines[shown_to:a - 1] if line.strip() and not _is_marker(line)]
        if code:  # a gap of blank lines and region markers only is dropped silently
            indent = re.match(r"\s*", code[0]).group(0)
            lo, hi = first + shown_to, first + a - 2
            out.append(f"{indent}# ... {f'line {lo}' if lo == hi else f'lines {lo}-{hi}'} not shown\n")
        out.extend(lines[a - 1:b])
        shown_to = b
    return "".join(out)


def show_source(obj, method: str | None = None, *, lines: tuple[int, int] | None = None,
                region: str | None = None) -> None:
    """Print the source of a function, class or one of its methods, with the file and line it came from.

    lines=(a, b): only lines a..b (inclusive), counted from 1 = the first line of the object's source (its
    `def` or `class` line, or its decorator), so that a chapter names lines of what it shows, not of the file.
    region="NAME": only the lines between `# region: NAME` and `# endregion` comments in that source; a region
    marked in several pieces is shown in order, each gap replaced by a comment naming the lines left out.
    In Jupyter the code is shown highlighted; elsewhere it is printed as plain text.
    """
    text, first, where = source_lines(obj, method)
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", "?")) + (f".{method}" if method else "")
    if lines is not None and region is not None:
        raise ValueError("show_source takes lines=(a, b) or region=NAME, not both")
    if lines is not None:
        if not (isinstance(lines, tuple) and len(lines) == 2 and all(isinstance(n, int) for n in lines)):
            raise ValueError(f"lines should be a tuple (a, b) of two ints, got {lines!r}")
        a, b = lines
        if not 1 <= a <= b <= len(text):
            raise ValueError(f"lines={lines!r} is outside {name}'s source: allowed 1 <= a <= b <= {len(text)}")
        header = f"# {where}, lines {first + a - 1}-{first + b - 1} ({name}, lines {a}-{b} of {len(text)})"
        code = "".join(text[a - 1:b])
    elif region is not None:
        found = regions(text)
        if region not in found:
            names = ", ".join(repr(r) for r in found) or "none"
            raise ValueError(f"{name} has no region {region!r}; regions marked in it: {names}")
        header = f"# {where}, line {first}: {name}, the lines marked as region {region!r}"
        code = select_lines(text, first, found[region])
    else:
        header = f"# {where}, line {first}"
        code = "".join(text)
    _display(header + "\n" + code.rstrip())


def _display(code: str) -> None:
    """Highlighted in Jupyter, plain text elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display

        if get_ipython() is not None:
            display(Markdown(f"```python\n{code}\n```"))
            return
    except ImportError:
        pass
    print(code)


def say(*parts, width: int = 100, indent: str = "    ", sep: str = " ") -> None:
    """print(), but any line longer than `width` characters is wrapped at spaces, continuations indented.

    The chapters print with it where a line could pass the width of JupyterLab's output area (about 107
    characters in a 1280-pixel window with the file browser open): a wrapped sentence reads, a cut one does not.
    """
    import textwrap

    for line in sep.join(str(p) for p in parts).split("\n"):
        if len(line) <= width:
            print(line)
        else:
            print(textwrap.fill(line, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False))
