"""The training loop, with DeepSeek LLM's recipe (arXiv 2401.02954, section 2.3) at any size.

    AdamW, beta1 0.9, beta2 0.95, weight decay 0.1 (on matrices; not on RMSNorm gains)
    gradient clipping at norm 1.0
    linear warm-up, then the multi-step schedule (schedule.py)
    bf16 autocast on CUDA (weights and optimizer state stay float32), plain float32 on the CPU

Data comes from a function `get_batch(step, generator) -> (inputs (b, t), targets (b, t))` of token ids;
targets of -100 are ignored by the loss (the synthetic tasks score only their answers). A DeepSeekMoE
model's balance loss (model.moe_aux_loss()) is added to the LM loss before backward, and V3's selection
bias moves after each optimizer step (model.update_expert_bias()); logged losses are the LM loss. The generator is
the only source of randomness in the loop: it is seeded from `TrainConfig.seed` and saved in every
checkpoint, so a resumed run draws exactly the batches an uninterrupted run would have drawn and reaches
exactly the same losses (tests/test_train.py checks that, bit for bit).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .checkpoint import checkpoint_path, load_checkpoint, read_checkpoint_meta, save_checkpoint
from .schedule import SCHEDULES, lr_at

GetBatch = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
EvalFn = Callable[[torch.nn.Module], dict]


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int
    seq_len: int
    peak_lr: float
    warmup_steps: int
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eval_every: int = 0  # 0: evaluate only at the end
    seed: int = 0
    schedule: str = "multistep"  # or "cosine"
    device: str = "cpu"
    checkpoint_every: int = 0  # 0: checkpoint at every evaluation (and at the end)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "seq_len"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "seed"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be an int >= 0, got {getattr(self, name)!r}")
        if self.warmup_steps > self.steps:
            raise ValueError(f"TrainConfig.warmup_steps ({self.warmup_steps}) exceeds steps ({self.steps})")
        if not self.peak_lr > 0:
            raise ValueError(f"TrainConfig.peak_lr must be positive, got {self.peak_lr}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule {self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        if self.weight_decay < 0 or self.grad_clip <= 0:
            raise ValueError("TrainConfig: weight_decay must be >= 0 and grad_clip > 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices (dim >= 2) only: decaying RMSNorm gains toward 0 would
    fight the normalisation, so the usual practice (nanoGPT, Megatron) exempts them."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("make_optimizer: every parameter of the model is frozen (requires_grad False); "
                         "unfreeze some (finetune.unfreeze) or add LoRA adapters (lora.apply_lora)")
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    fused = torch.device(config.device).type == "cuda"  # one kernel for all parameters on the GPU
    return torch.optim.AdamW(groups, lr=config.peak_lr, betas=tuple(config.betas), fused=fused or None)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose target is not -100, computed in float32."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


def autocast_context(device: str | torch.device):
    """bf16 autocast on CUDA; a no-op elsewhere (the CPU trains in float32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(
    model: torch.nn.Module,
    get_batch: GetBatch,
    config: TrainConfig,
    eval_fn: EvalFn | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train `model` in place for config.steps steps; return the history.

    history: steps, losses, lrs, grad_norms (one entry per step), evals (a list of {"step", **eval_fn(model)}),
    tokens (input tokens seen, counting every position), tokens_per_s (training steps only, evaluation
    and checkpoint time excluded), train_seconds, resumed_from (the step a resume started at, or None).

    eval_fn(model) runs every config.eval_every steps and after the last, under no_grad and eval mode.
    With a checkpoint_dir, a checkpoint is written atomically every checkpoint_every steps (default: at each
    evaluation) and at the end; with resume=True the loop continues from the checkpoint there, if any.

    Resuming checks before it touches anything (weights, optimizer, generators) that the checkpoint was made
    with the same TrainConfig (the fields that shape the run) and the same ModelConfig (saved with every
    checkpoint: a model of another rope_theta, norm_eps or window has the same shapes and would load silently
    wrong); a difference is refused, naming the fields. resume=True with no checkpoint in checkpoint_dir starts
    at step 0 with a warning naming the folder, as PyTorch Lightning does for ckpt_path="last" when there is
    no checkpoint yet (a first run and a mistyped folder look the same, so it says which folder it looked in).
    """
    device = torch.device(config.device)
    model.to(device)
    model.train()
    optimizer = make_optimizer(model, config)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    history: dict[str, Any] = {
        "steps": [], "losses": [], "lrs": [], "grad_norms": [], "evals": [],
        "tokens": 0, "tokens_per_s": None, "train_seconds": 0.0, "resumed_from": None,
    }
    start = 0
    model_config = _model_config_dict(model)
    if resume and checkpoint_dir is None:
        raise ValueError("train: resume=True needs the checkpoint_dir to resume from")
    if resume and not os.path.isfile(checkpoint_path(checkpoint_dir)):
        warnings.warn(f"train(resume=True): no checkpoint in {os.path.abspath(checkpoint_dir)} "
                      f"({'no such folder' if not os.path.isdir(checkpoint_dir) else 'the folder has none'}); "
                      "starting at step 0", stacklevel=2)
    elif resume:
        _, saved = read_checkpoint_meta(checkpoint_dir)  # the header only: nothing is loaded yet
        _check_same_config(saved.get("train_config", {}), config)
        _check_same_model(saved.get("model_config"), model_config, checkpoint_dir)
        start, meta = load_checkpoint(checkpoint_dir, model, optimizer, generator)
        history.update(meta["history"])
        history["resumed_from"] = start

    every_eval = config.eval_every or config.steps
    every_ckpt = config.checkpoint_every or every_eval
    pending: list[tuple] = []  # (loss, grad norm, MoE balance loss or None) still on the device

    def flush() -> None:  # one device->host copy per log interval, not one per step
        for loss, norm, aux in pending:
            history["losses"].append(loss.item())
            history["grad_norms"].append(norm.item())
            if aux is not None:  # only MoE models have the key "aux_losses"
                history.setdefault("aux_losses", []).append(aux.item())
        pending.clear()

    bar = _progress_bar(config.steps, start, progress)
    tic = time.perf_counter()
    for step in range(start, config.steps):
        lr = lr_at(config.schedule, step, config.steps, config.peak_lr, config.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = get_batch(step, generator)
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with autocast_context(device):
            logits = model(inputs, validate=False) if _takes_validate(model) else model(inputs)
        loss = lm_loss(logits, targets)
        aux = _moe_aux_loss(model)  # None for a dense model
        optimizer.zero_grad(set_to_none=True)
        (loss if aux is None else loss + aux).backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        if aux is not None:
            model.update_expert_bias()

        pending.append((loss.detach(), norm.detach(), None if aux is None else aux.detach()))
        history["steps"].append(step)
        history["lrs"].append(lr)
        history["tokens"] += inputs.numel()
        done = step + 1
        if done % every_eval == 0 or done == config.steps or done % every_ckpt == 0:
            flush()
            _sync(device)
            history["train_seconds"] += time.perf_counter() - tic
            if done % every_eval == 0 or done == config.steps:
                if eval_fn is not None:
                    history["evals"].append({"step": done, **_evaluate(model, eval_fn, device)})
                if bar is not None:
                    bar.set_postfix(loss=f"{history['losses'][-1]:.3f}", lr=f"{lr:.2e}")
            if checkpoint_dir is not None and (done % every_ckpt == 0 or done == config.steps):
                meta = {"train_config": _config_dict(config), "model_config": model_config, "history": history}
                save_checkpoint(checkpoint_dir, model, optimizer, generator, done, meta)
            tic = time.perf_counter()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    flush()
    seconds = history["train_seconds"]
    history["tokens_per_s"] = history["tokens"] / seconds if seconds > 0 else None
    return history


def _evaluate(model: torch.nn.Module, eval_fn: EvalFn, device: torch.device) -> dict:
    model.eval()
    try:
        with torch.no_grad(), autocast_context(device):
            result = eval_fn(model)
    finally:
        model.train()
    if not isinstance(result, dict):
        raise TypeError(f"eval_fn must return a dict, got {type(result).__name__}")
    return result


def _moe_aux_loss(model: torch.nn.Module) -> torch.Tensor | None:
    """The MoE balance loss of the forward just run (alpha_1 * sum f_i P_i over layers), None if dense."""
    config = getattr(model, "config", None)
    return model.moe_aux_loss() if getattr(config, "is_moe", False) else None


def _takes_validate(model: torch.nn.Module) -> bool:
    # DeepSeekLM checks the id range with a device->host read; the loop's own data needs no check.
    # A peft model (lora.py) passes keyword arguments through to the DeepSeekLM it wraps.
    from .model import DeepSeekLM

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return isinstance(base, DeepSeekLM)


def _config_dict(config: TrainConfig) -> dict:
    d = asdict(config)
    d["betas"] = list(d["betas"])
    return d


def _check_same_config(saved: dict, config: TrainConfig) -> None:
    # Fields that change the trajectory must match; device and eval/checkpoint cadence may differ.
    now = _config_dict(config)
    keys = ("steps", "batch_size", "seq_len", "peak_lr", "warmup_steps", "weight_decay", "betas",
            "grad_clip", "seed", "schedule")
    diff = {k: (saved.get(k), now[k]) for k in keys if saved.get(k) != now[k]}
    if diff:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"cannot resume: the checkpoint was made with another TrainConfig ({detail})")


def _model_config_dict(model: torch.nn.Module) -> dict | None:
    """The model's ModelConfig as JSON values (a peft model's base model's), or None for another module."""
    import json

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    return json.loads(json.dumps(config.to_dict())) if hasattr(config, "to_dict") else None


def _check_same_model(saved: dict | None, now: dict | None, checkpoint_dir) -> None:
    # A checkpoint written before model configs were saved (saved None) is checked by names and shapes only.
    if saved is None or now is None or saved == now:
        return
    diff = [f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}" for k in sorted(set(saved) | set(now))
            if saved.get(k) != now.get(k)]
    raise ValueError(f"cannot resume from {checkpoint_dir}: the checkpoint was made by a model of another "
                     f"ModelConfig ({', '.join(diff)}); build the model with the checkpoint's config, or use "
                     "another checkpoint_dir")


def _progress_bar(total: int, start: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="train", unit="step", mininterval=1.0)


def perplexity(loss: float) -> float:
    return math.exp(loss)
