"""Where the project's own files are: found from the package, never from the working directory.

A chapter opened from notebooks/, from the repository root or from anywhere else in JupyterLab reads the same
committed results, because every path starts at the checkout that holds this package:

    project_path("data", "results", "hop_k_cuda.json")
    project_path("benchmarks", "results")

minids is installed editable (`pip install -e .`, which requirements.txt does), so the package lives inside the
checkout and the checkout's data/ and benchmarks/ folders sit beside it.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def project_path(*parts: str, must_exist: bool = True) -> Path:
    """PROJECT_ROOT / parts; with must_exist, a clear error where the file or folder is not there."""
    path = PROJECT_ROOT.joinpath(*parts)
    if must_exist and not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist. minids looks for the project's files beside its package ({PROJECT_ROOT}); "
            "they are there in a checkout of the repository installed with `pip install -e .` "
            "(requirements.txt does this). A copy of minids installed from a wheel has no data/ or benchmarks/.")
    return path
