"""show_source: print the real source of a minids object in a notebook, so chapters never re-type code."""

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
