"""Training checkpoints: one safetensors file, written atomically, enough to resume bit for bit.

A checkpoint holds everything the next step depends on:

    model.<name>              every weight, in its own dtype
    optim.<i>.<key>           AdamW's state of parameter i (step, exp_avg, exp_avg_sq)
    rng.data                  the state of the data generator handed to get_batch
    rng.torch_cpu, rng.cuda   the global torch generators (nothing in minids draws from them while
                              training, but a user's model might: dropout)
    metadata (JSON strings)   the step to resume at, AdamW's param_groups, the training config, the history

Writing goes to a temporary file in the same folder and then `os.replace`s it over the old checkpoint: the
rename is atomic on POSIX and Windows, so a crash mid-write leaves the previous checkpoint intact and never a
half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file

CHECKPOINT_NAME = "checkpoint.safetensors"


def checkpoint_path(directory: str | os.PathLike) -> str:
    return os.path.join(os.fspath(directory), CHECKPOINT_NAME)


def save_checkpoint(
    directory: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data_generator: torch.Generator,
    step: int,
    meta: dict[str, Any] | None = None,
) -> str:
    """Write `directory`/checkpoint.safetensors atomically; `step` is the next step to run. Returns the path."""
    os.makedirs(directory, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, value in model.state_dict().items():
        tensors[f"model.{name}"] = value.detach().contiguous().cpu()
    optim_state = optimizer.state_dict()
    for index, state in optim_state["state"].items():
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                value = torch.tensor(value)
            tensors[f"optim.{index}.{key}"] = value.detach().contiguous().cpu()
    tensors["rng.data"] = data_generator.get_state()
    tensors["rng.torch_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    metadata = {
        "step": str(step),
        "param_groups": json.dumps(optim_state["param_groups"]),
        "meta": json.dumps(meta or {}),  # json writes floats with repr: they come back exactly
    }
    path = checkpoint_path(directory)
    fd, tmp = tempfile.mkstemp(dir=os.fspath(directory), prefix=".checkpoint-", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_checkpoint(
    directory: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data_generator: torch.Generator,
) -> tuple[int, dict[str, Any]]:
    """Restore model, optimizer and generators from `directory`; returns (next step, meta)."""
    path = checkpoint_path(directory)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(path)
    device = next(model.parameters()).device

    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path} does not fit this model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]} (was it saved from another shape?)"
        )
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    # load_state_dict moves exp_avg/exp_avg_sq to each parameter's device and dtype (and keeps `step` as is).
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})
    data_generator.set_state(tensors["rng.data"])
    torch.set_rng_state(tensors["rng.torch_cpu"])
    if "rng.cuda" in tensors and device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    return int(metadata["step"]), json.loads(metadata["meta"])
