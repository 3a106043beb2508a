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
half-written file. The rename replaces only a minids checkpoint: a checkpoint.safetensors that is something
else (no "step" in its metadata, or not a safetensors file) is refused unless overwrite=True, and a damaged
checkpoint is named when read (files.py). `read_checkpoint_meta` reads the step and meta from the header
alone, so train() can refuse a resume before any weight or generator state is touched.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import torch
from safetensors.torch import save_file

from .files import DamagedFileError, load_safetensors, open_safetensors

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
    overwrite: bool = False,
) -> str:
    """Write `directory`/checkpoint.safetensors atomically; `step` is the next step to run. Returns the path.
    An existing checkpoint.safetensors is replaced only if it is a minids checkpoint (or with overwrite=True)."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise FileExistsError(f"save_checkpoint: {os.fspath(directory)} is a file, not a folder; choose another "
                              "checkpoint_dir")
    path = checkpoint_path(directory)
    if os.path.exists(path) and not overwrite:
        try:
            read_checkpoint_meta(directory)
        except (DamagedFileError, KeyError, ValueError, IsADirectoryError) as exc:
            raise FileExistsError(f"save_checkpoint: {path} exists and is not a minids checkpoint ({exc}); "
                                  "replacing it would lose it: choose another checkpoint_dir, or pass "
                                  "overwrite=True") from None
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
    fd, tmp = tempfile.mkstemp(dir=os.fspath(directory), prefix=".checkpoint-", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_checkpoint_meta(directory: str | os.PathLike) -> tuple[int, dict[str, Any]]:
    """(next step, meta) of the checkpoint in `directory`, from the file's header only (no tensor is read)."""
    path = checkpoint_path(directory)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a folder, not a checkpoint file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    with open_safetensors(path) as f:
        metadata = f.metadata() or {}
    if "step" not in metadata:
        raise DamagedFileError(f"{path} is a safetensors file but not a minids checkpoint (no 'step' in its "
                               "metadata)")
    return int(metadata["step"]), json.loads(metadata.get("meta", "{}"))


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
    read_checkpoint_meta(directory)  # a damaged file or another kind of file is named before anything changes
    with open_safetensors(path) as f:
        metadata = f.metadata()
    tensors = load_safetensors(path)
    device = next(model.parameters()).device

    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    own = model.state_dict()  # checked before loading: a checkpoint that does not fit changes nothing
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    misshaped = [f"{k}: checkpoint {tuple(weights[k].shape)}, model {tuple(own[k].shape)}"
                 for k in sorted(set(own) & set(weights)) if weights[k].shape != own[k].shape]
    if missing or unexpected or misshaped:
        raise ValueError(
            f"checkpoint {path} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"mis-shaped {misshaped[:3]} (was it saved from another shape?)"
        )
    model.load_state_dict(weights)
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
