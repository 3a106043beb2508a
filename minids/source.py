"""show_source: print the real source of a minids object in a notebook, so chapters never re-type code;
say: print with long lines wrapped to the width of a notebook's output area."""

from __future__ import annotations

import inspect


def show_source(obj, method: str | None = None) -> None:
    """Print the source of a function, class or one of its methods, with the file and line it came from.

    In Jupyter the code is shown highlighted; elsewhere it is printed as plain text.
    """
    target = getattr(obj, method) if method else obj
    target = inspect.unwrap(getattr(target, "fget", target))  # properties show their getter
    lines, first = inspect.getsourcelines(target)
    path = inspect.getsourcefile(target) or "?"
    where = path[path.rfind("minids"):] if "minids" in path else path
    header = f"# {where}, line {first}"
    code = header + "\n" + "".join(lines).rstrip()
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
