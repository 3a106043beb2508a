"""allow_recompiles: keep torch.compile from silently falling back to eager when it is asked for many graphs.

torch.compile caches one compiled graph per guard set, up to a limit (8 by default); past it the module runs
eagerly without a word. minids compiles each decoder layer (older torch guards each layer module separately)
and FlexAttention with one graph per mask rule, so every caller that compiles raises the limit first. It lives
in its own file so that attention.py can use it without importing the fast paths (which import training).
"""

from __future__ import annotations

import torch


def allow_recompiles(at_least: int) -> None:
    """Raise torch.compile's recompile limit to at least `at_least` (a no-op where it is already that high)."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # renamed in newer torch; set whichever exists
        if hasattr(config, name) and getattr(config, name) < at_least:
            setattr(config, name, at_least)
            return
