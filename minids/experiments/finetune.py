"""Fine-tuning deep vs wide: does spending parameters on depth rather than FFN width help transfer?

    python -m minids.experiments.finetune --device cuda --out data/results --seeds 0           # one H200, ~270 s
    python -m minids.experiments.finetune --device cuda --out data/results --seeds 1 2 --merge # then, < 570 s
    python -m minids.experiments.finetune --setting tiny                                        # seconds on a CPU

The seed's question, measured on models minids pre-trains itself. Two DeepSeek-shaped models with ONE
non-embedding budget (within 3%) at fixed d_model, depth bought with FFN width as DeepSeek did (shapes.py):
at d_model 256 the shallow-wide L2 has d_ff 3,520 and the deep-narrow L8 d_ff 688 (5.8M non-embedding
parameters each, 9.9M with the 8,064-token embedding and lm_head). For each shape and seed:

    pre-train   on the project's Python corpus (data/pretrain, cut by data/tokenizer, documents joined by
                eos, random windows of 512 tokens, as minids.experiments.miniature reads it), 80M tokens
                (4.9 passes over the 16.3M-token train split) with the project's recipe (train.py: AdamW 0.9 /
                0.95, wd 0.1, clip 1.0, warm-up then the multi-step schedule, bf16 autocast on CUDA). One peak
                learning rate and batch for the whole family, Eq. 1 of the paper at C = M D with M counted
                from the real weights (`scaling.training_recipe(scale="real")`): Eq. 2's M counts only
                d_model^2 per layer and would give the shallow shape another recipe for the same parameters
    fine-tune   on two tasks pre-training never posed (data/downstream.py):
                  hop_k       compositional: k <= 4 hops of induction on 63 characters, written in tokens the
                              model knows; metric: mean accuracy over k = 1..4 (chance 1/3, see
                              data/downstream.py); k = 2 already needs about 3 layers for
                              an exact, length-independent solution (Sanford et al. 2024), so on k >= 2 the L2
                              shape can only do better than chance by shortcuts that hold at n = 64
                  names       a function's name from its masked source (train split functions to learn from,
                              validation split functions to score: files pre-training never saw); metric:
                              exact match of the whole name (chance: always answering the commonest name)
                with three methods from the pre-trained weights: "full" (every weight, at 0.3 x the
                pre-training peak rate on the H200; see SETTINGS["cuda"]), "lora-attn" (peft LoRA r 8, alpha 16 on
                q, k, v, o) and "lora-all" (the seven projections), LoRA at a fixed 2e-3; and "full" from
                the seed's untrained initialisation as the control, at the pre-training peak rate (a scratch
                model at a fine-tuning rate would lose for the wrong reason). Every method sees the same
                batches for a given seed, so methods and shapes are compared on identical data.
                LoRA keeps r = 8 on both shapes, as a practitioner would; its trainable count follows the
                shape (r (d_in + d_out) per matrix and layer): lora-attn trains 28,672 parameters in L2 and
                114,688 in L8, lora-all 209,920 and 295,936 (each run records trainable_params). Only "full"
                compares the shapes at equal trainable parameters; the chapter must say so.

Decided before any result existed, and computed from the file by `verdict()`:

    gate      the runs can answer the question only if (1) every pre-trained base's held-out loss is below
              the unigram loss of the validation split (it learned more than token frequencies); (2) on
              names, for each shape, "full" from pre-trained beats the scratch control by >= 0.05 exact
              match (pre-training transfers at all); (3) for each shape, "full" from pre-trained is >= 0.10
              above chance on hop_k at k = 1 (the hop that both shapes have the depth for, so that a shallow
              model failing at k >= 2 is a result, not a failed run) and >= 0.05 above chance on names.
              Otherwise: INVALID, with the failing parts named; fix the training, never the gate.
    cells     for each task and pre-trained method (6 cells) and for the transfer gain per task (pre-trained
              "full" minus scratch, paired by seed): effect = mean(deep) - mean(wide) over seeds; resolved
              when |effect| >= max(2 x the larger seed std, 0.02) and the seeds do not overlap (every seed
              of the better shape above every seed of the other); otherwise unresolved; no verdict ("not
              decided") until every cell has 3 seeds per shape, since one seed has no spread to measure against
    verdict   "deep-narrow transfers better" when >= 4 of the 6 method cells resolve for deep and none for
              wide; "shallow-wide transfers better" the same the other way; "no shape effect resolved" when
              none of the 6 resolves; "partly deep-narrow" / "partly shallow-wide" when 1 to 3 resolve, all
              for the same shape (the reason names the cells, e.g. hop_k only); "mixed" when both shapes win
              some. Reported beside it: the pre-training loss gap between the
              shapes under the same rule (Tay et al. 2021: shape matters more downstream than upstream),
              and per task and method the correlation of downstream value with upstream loss over the bases.

The runs go side by side on one GPU (--workers processes, as hop_depth does: each model is small, so one
alone leaves the H200 waiting on kernel launches). The 6 pre-trainings start first, the 12 scratch
controls fill the other workers, and each base's 6 fine-tunes start as soon as it is saved. Every run is
eager PyTorch (no torch.compile: a fine-tune is a few seconds of GPU work, less than compiling it).
Every finished run is written to the JSON file at once (atomically), with the verdict recomputed; a run
that would pass --deadline-s stops and is recorded under "incomplete", never averaged.

The file: {"meta": ..., "pretrain": [one record per base], "runs": [one record per fine-tune], "details":
[...], "incomplete": [...], "verdict": ...}. A run record has exactly: shape, n_layers, d_model, d_ff,
non_embedding_params, seed, method, init, task, metric, value, trainable_params, steps, device, pretrain_loss
(held-out nats/token of its base; null from scratch) and curve ([{"step", "value"}], the metric on a held-out
subset, step 0 first). Its "details" entry (same n_layers, seed, method, init, task) holds the held-out loss
and, for hop_k, the accuracy at every k.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import json
import math
import multiprocessing
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace

import torch

from ..finetune import FINETUNE_LR_SCALE
from ..files import read_json
from ..results import write_json_atomic
from .cli import check_out, nonnegative_float, nonnegative_int, positive_float, positive_int
from ..shapes import Shape, budget_of, shape_for
from .depth_vs_width import binned, device_name, mean_std

VOCAB_SIZE = 8064  # data/tokenizer
TASKS = ("hop_k", "names")
METHODS = ("full", "lora-attn", "lora-all")
LORA_TARGETS = {"lora-attn": "attn", "lora-all": "all"}
RUN_FIELDS = ("shape", "n_layers", "d_model", "d_ff", "non_embedding_params", "seed", "method", "init", "task",
              "metric", "value", "trainable_params", "steps", "device", "pretrain_loss", "curve")
DETAIL_KEYS = ("n_layers", "seed", "method", "init", "task")  # what names a run in the "details" list

# the rules (module docstring), fixed before any result
GATE_TRANSFER = 0.05  # names: pre-trained "full" minus scratch, per shape
# pre-trained "full" above the task's chance, per shape: on hop_k at k = 1 (the one hop both shapes have the
# depth for: an induction head needs 2 layers), on names over all scored functions
GATE_ABOVE_CHANCE = {"hop_k": 0.10, "names": 0.05}
EFFECT_SIGMAS, EFFECT_FLOOR = 2.0, 0.02  # a cell resolves at |effect| >= max(2 x seed std, 0.02), seeds apart
MAJORITY = 4  # of the 6 method cells
MIN_SEEDS = 3  # a verdict needs the seed spread of 3 seeds per shape in every cell; fewer: "not decided"


@dataclass(frozen=True)
class FinetuneSetting:
    d_model: int  # the budget is that of d_model x reference_layers with d_ff = reference_d_ff
    head_dim: int
    kv_ratio: int
    reference_layers: int
    reference_d_ff: int
    layers: tuple[int, ...]  # the shapes: the fewest layers is "wide", the most "deep"
    seeds: tuple[int, ...] = (0, 1, 2)
    # pre-training
    seq_len: int = 512
    pretrain_tokens: float = 4e7
    pretrain_batch: int | None = None  # sequences per step; None: Eq. 1
    pretrain_lr: float | None = None  # None: Eq. 1
    warmup_fraction: float = 0.03
    pretrain_evals: int = 4  # held-out loss points on the pre-training curve
    val_windows: int = 128  # held-out windows of seq_len (None: the whole validation split)
    text_chars: int | None = None  # only the corpus's first characters (the tests)
    # fine-tuning
    tasks: tuple[str, ...] = TASKS
    methods: tuple[str, ...] = METHODS
    ft_steps: int = 300
    names_ft_steps: int | None = None  # the names task's own step count (None: ft_steps); see the 2026-12-03 run
    ft_warmup_fraction: float = 0.05
    full_lr_scale: float = FINETUNE_LR_SCALE
    lora_lr: float = 2e-3
    lora_r: int = 8
    lora_alpha: float = 16.0
    hop_n: int = 64
    hop_max: int = 4
    hop_batch: int = 256
    hop_eval_per_k: int = 256
    names_seq_len: int = 256
    names_batch: int = 64
    names_train: int = 20_000
    names_eval: int = 1024
    curve_points: int = 6
    curve_hop_per_k: int = 64
    curve_names: int = 256
    multiple_of: int = 8
    workers: int = 1
    deadline_s: float = 3600.0


SETTINGS: dict[str, FinetuneSetting] = {
    # One H200, 12 runs side by side. At first < 8 minutes: 6 pre-trainings of 40M tokens, 48 fine-tunes of 300
    # steps x 16K tokens (hop_k: 256 sequences of 64; names: 64 examples of 256).
    # The first run (300 names steps, full fine-tuning at 0.1 x the peak) failed the gate on names: exact match
    # 0.043 (L2) and 0.051 (L8), curves still rising. The training, not the gate, changed: names trains for 800
    # steps (2.6 passes over its 20,000 functions) and full fine-tuning runs at 0.3 x the pre-training peak.
    # That second run failed by one function (L2 names 0.0693 < 0.0695), its curves flat after 1.7 passes:
    # names now learns from 50,000 of the 52,102 training-split functions (one pass in 800 steps; chance
    # unchanged, 'forward' 0.0195), so it sees more names instead of the same names again. That third run
    # failed the same way (L2 0.069; L8 0.082): the names data was not what held L2 back. A pilot on L2 alone
    # (seeds 0 and 2, names full only) pointed at the bases: pre-trained on 80M tokens instead of 40M (Eq. 1's
    # recipe at 80M: batch 72 x 512, 2,170 steps) they reach 2.15 nats/token (was 2.48) and names 0.078 and
    # 0.103 (were 0.074 and 0.062). So the bases now see 80M tokens (4.9 passes over the train split); that
    # no longer fits one 10-minute call, so it runs as --seeds 0, then --seeds 1 2 --merge.
    "cuda": FinetuneSetting(d_model=256, head_dim=32, kv_ratio=2, reference_layers=8, reference_d_ff=688,
                            layers=(2, 8), pretrain_tokens=8e7, names_ft_steps=800, full_lr_scale=0.3,
                            names_train=50_000, workers=12, deadline_s=570.0),
    # The same code at CPU size: a long coffee on two cores.
    "cpu": FinetuneSetting(d_model=64, head_dim=16, kv_ratio=2, reference_layers=4, reference_d_ff=176,
                           layers=(1, 4), seeds=(0, 1), seq_len=128, pretrain_tokens=2e6, val_windows=32,
                           ft_steps=150, hop_n=32, hop_max=3, hop_batch=64, hop_eval_per_k=64, names_seq_len=128,
                           names_batch=32, names_train=5000, names_eval=256, curve_points=3, curve_hop_per_k=32,
                           curve_names=128, workers=2),
    # The unit test's: seconds; every record and field, nothing learned.
    "tiny": FinetuneSetting(d_model=32, head_dim=16, kv_ratio=2, reference_layers=2, reference_d_ff=64,
                            layers=(1, 2), seeds=(0,), seq_len=32, pretrain_tokens=2560, pretrain_batch=8,
                            pretrain_lr=3e-3, pretrain_evals=2, val_windows=4, text_chars=120_000, ft_steps=4,
                            hop_n=16, hop_max=2, hop_batch=8, hop_eval_per_k=4, names_seq_len=64, names_batch=8,
                            names_train=64, names_eval=16, curve_points=2, curve_hop_per_k=2, curve_names=8,
                            multiple_of=4),
}


# ---- shapes and recipe ------------------------------------------------------------------------------
def budget(setting: FinetuneSetting) -> int:
    return budget_of(setting.d_model, setting.reference_layers, setting.reference_d_ff, setting.head_dim,
                     setting.kv_ratio)


def shape_of(setting: FinetuneSetting, n_layers: int) -> Shape:
    return shape_for(budget(setting), setting.d_model, n_layers, head_dim=setting.head_dim,
                     kv_ratio=setting.kv_ratio, vocab_size=VOCAB_SIZE,
                     max_seq_len=max(setting.seq_len, setting.names_seq_len, setting.hop_n),
                     multiple_of=setting.multiple_of)


def recipe(setting: FinetuneSetting) -> dict:
    """One pre-training recipe for the family: Eq. 1 at C = M D, M from the reference shape's real weights."""
    from ..scaling import training_recipe

    reference = shape_of(setting, setting.reference_layers).config
    r = training_recipe(reference, float(setting.pretrain_tokens), seq_len=setting.seq_len, scale="real")
    batch = setting.pretrain_batch or max(8, int(round(r.batch_tokens / setting.seq_len / 8)) * 8)
    lr = setting.pretrain_lr or r.lr
    steps = max(1, int(setting.pretrain_tokens // (batch * setting.seq_len)))
    return {"peak_lr": lr, "batch_sequences": batch, "batch_tokens": batch * setting.seq_len, "steps": steps,
            "warmup_steps": max(1, int(setting.warmup_fraction * steps)), "eq1_lr": r.lr,
            "eq1_batch_tokens": r.batch_tokens, "M": r.M, "C": r.C}


def learning_rate(setting: FinetuneSetting, method: str, init: str) -> float:
    pretrain_lr = recipe(setting)["peak_lr"]
    if init == "scratch":
        return pretrain_lr
    return pretrain_lr * setting.full_lr_scale if method == "full" else setting.lora_lr


def wide_and_deep(setting: FinetuneSetting) -> tuple[int, int]:
    return min(setting.layers), max(setting.layers)


# ---- data, prepared once by the main process ----------------------------------------------------------
def prepare_corpus(setting: FinetuneSetting, workdir: str, log=print) -> dict:
    """Tokenize the corpus (as miniature does) into workdir/corpus.pt; return facts for the meta record."""
    from ..data.pretrain import pretrain_text
    from ..paths import project_path
    from ..tokenizer import Tokenizer
    from .miniature import token_bytes, token_stream

    t0 = time.time()
    tokenizer = Tokenizer.from_dir(project_path("data", "tokenizer"))
    if tokenizer.vocab_size > VOCAB_SIZE:
        raise ValueError(f"data/tokenizer has {tokenizer.vocab_size} ids, more than the models' {VOCAB_SIZE}")
    texts = {s: pretrain_text(s) for s in ("train", "val")}
    if setting.text_chars:
        texts = {s: t[:setting.text_chars] for s, t in texts.items()}
    streams = {s: token_stream(t, tokenizer).to(torch.int16) for s, t in texts.items()}  # 8,064 ids fit
    counts = torch.bincount(streams["train"].long(), minlength=VOCAB_SIZE).double() + 1  # add-one
    val = streams["val"].long()
    unigram = -(counts / counts.sum()).log()[val].mean().item()
    torch.save({"train": streams["train"], "val": streams["val"], "nbytes": token_bytes(tokenizer, VOCAB_SIZE)},
               os.path.join(workdir, "corpus.pt"))
    facts = {"train_tokens": len(streams["train"]), "val_tokens": len(val), "unigram_val_loss": unigram,
             "seconds": time.time() - t0}
    log(f"corpus: {facts['train_tokens']:,} train / {facts['val_tokens']:,} val tokens, unigram loss "
        f"{unigram:.3f} nats/token ({facts['seconds']:.0f} s)")
    return facts


def prepare_names(setting: FinetuneSetting, workdir: str, log=print) -> dict:
    """Build the names task into workdir/names.pt; return its facts for the meta record."""
    from ..data.downstream import FunctionNames
    from ..data.pretrain import pretrain_text
    from ..paths import project_path
    from ..tokenizer import Tokenizer

    t0 = time.time()
    tokenizer = Tokenizer.from_dir(project_path("data", "tokenizer"))
    texts = {s: pretrain_text(s) for s in ("train", "val")}
    if setting.text_chars:
        texts = {s: t[:setting.text_chars] for s, t in texts.items()}
    task = FunctionNames(tokenizer, texts["train"], texts["val"], seq_len=setting.names_seq_len,
                         max_train=setting.names_train, max_eval=setting.names_eval)
    torch.save(task.state(), os.path.join(workdir, "names.pt"))
    facts = {"train_examples": len(task.train_names), "eval_examples": len(task.eval_names),
             "majority_name": task.majority_name, "chance": task.chance, "example": task.describe(0)[-400:],
             "seconds": time.time() - t0}
    log(f"names: {facts['train_examples']:,} functions to learn from, {facts['eval_examples']:,} to score; "
        f"chance (always {task.majority_name!r}) {task.chance:.3f} ({facts['seconds']:.0f} s)")
    return facts


_CACHE: dict = {}  # per worker process: what it loaded from the workdir


def _load(workdir: str, name: str):
    key = (workdir, name)
    if key not in _CACHE:
        _CACHE[key] = torch.load(os.path.join(workdir, name), map_location="cpu", weights_only=False)
    return _CACHE[key]


def make_task(setting: FinetuneSetting, name: str, workdir: str):
    from ..data.downstream import FunctionNames, HopInVocab
    from ..paths import project_path
    from ..tokenizer import Tokenizer

    if name == "hop_k":
        return HopInVocab(Tokenizer.from_dir(project_path("data", "tokenizer")), n=setting.hop_n,
                          max_hops=setting.hop_max)
    if name == "names":
        return FunctionNames.from_state(_load(workdir, "names.pt"))
    raise ValueError(f"unknown task {name!r}; the tasks are {', '.join(TASKS)}")


# ---- the runs (each in a worker process) ---------------------------------------------------------------
class _Deadline(Exception):
    pass


def _with_deadline(get_batch, deadline: float | None):
    def get(step, generator):
        if deadline is not None and time.time() > deadline:
            raise _Deadline(step)
        return get_batch(step, generator)

    return get


def base_path(workdir: str, n_layers: int, seed: int) -> str:
    return os.path.join(workdir, f"base-L{n_layers}-s{seed}.pt")


def _shape_fields(shape: Shape) -> dict:
    c = shape.config
    return {"shape": shape.name, "n_layers": c.n_layers, "d_model": c.d_model, "d_ff": c.d_ff,
            "non_embedding_params": shape.non_embedding}


def pretrain_run(setting: FinetuneSetting, n_layers: int, seed: int, device: str, workdir: str,
                 deadline: float | None = None) -> dict:
    """Pre-train one base; save its weights to the workdir; return its record."""
    from ..model import DeepSeekLM
    from ..train import TrainConfig, train
    from .miniature import held_out_loss, random_windows, val_windows

    device = torch.device(device)
    shape, rec = shape_of(setting, n_layers), recipe(setting)
    corpus = _load(workdir, "corpus.pt")
    stream = corpus["train"].to(device).long()
    windows = val_windows(corpus["val"].to(device).long(), setting.seq_len, setting.val_windows)
    torch.manual_seed(seed)
    model = DeepSeekLM(shape.config, device=device)
    get_batch = _with_deadline(random_windows(stream, rec["batch_sequences"], setting.seq_len), deadline)
    config = TrainConfig(steps=rec["steps"], batch_size=rec["batch_sequences"], seq_len=setting.seq_len,
                         peak_lr=rec["peak_lr"], warmup_steps=rec["warmup_steps"],
                         eval_every=max(1, rec["steps"] // setting.pretrain_evals), seed=seed, device=str(device))
    history = train(model, get_batch, config, eval_fn=lambda m: held_out_loss(m, windows, corpus["nbytes"]),
                    progress=False)
    final = history["evals"][-1]
    torch.save({"state": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "val_loss": final["val_loss"]},
               base_path(workdir, n_layers, seed))
    steps, losses = binned(history["losses"], bins=40)
    return {**_shape_fields(shape), "seed": seed, "steps": rec["steps"], "batch_sequences": rec["batch_sequences"],
            "seq_len": setting.seq_len, "tokens": history["tokens"], "peak_lr": rec["peak_lr"],
            "val_loss": final["val_loss"], "val_bpb": final["val_bpb"], "val_tokens": final["val_tokens"],
            "curve": [{"step": e["step"], "val_loss": e["val_loss"]} for e in history["evals"]],
            "train_curve": {"step": steps, "loss": losses}, "train_seconds": history["train_seconds"],
            "tokens_per_s": history["tokens_per_s"], "device": str(device)}


def finetune_run(setting: FinetuneSetting, n_layers: int, seed: int, task_name: str, method: str, init: str,
                 device: str, workdir: str, deadline: float | None = None) -> tuple[dict, dict]:
    """Fine-tune one (shape, seed, task, method, init); return its record (RUN_FIELDS exactly) and its details."""
    from ..finetune import trainable_params
    from ..lora import apply_lora
    from ..model import DeepSeekLM
    from ..train import TrainConfig, autocast_context, train

    if method not in METHODS or init not in ("pretrained", "scratch"):
        raise ValueError(f"method {method!r} / init {init!r}: methods are {METHODS}, init pretrained or scratch")
    device = torch.device(device)
    shape = shape_of(setting, n_layers)
    task = make_task(setting, task_name, workdir)
    torch.manual_seed(seed)  # scratch: the same initialisation the seed's base started from
    model = DeepSeekLM(shape.config, device=device)
    pretrain_loss = None
    if init == "pretrained":
        base = torch.load(base_path(workdir, n_layers, seed), map_location=device, weights_only=True)
        model.load_state_dict(base["state"])
        pretrain_loss = base["val_loss"]
    if method == "full":
        trained = model
    else:
        torch.manual_seed(seed)  # the adapters' A
        trained = apply_lora(model, r=setting.lora_r, alpha=setting.lora_alpha, targets=LORA_TARGETS[method])
    if task_name == "hop_k":
        batch, seq_len = setting.hop_batch, setting.hop_n
        curve_set = task.eval_set(setting.curve_hop_per_k, seed=10_000, device=device)
        final_set = task.eval_set(setting.hop_eval_per_k, seed=20_000, device=device)
    else:
        batch, seq_len = setting.names_batch, setting.names_seq_len
        curve_set = task.eval_set(setting.curve_names, device=device)
        final_set = task.eval_set(None, device=device)
    get_batch = _with_deadline(task.batches(batch, seed, device), deadline)  # same batches for every method
    steps = setting.names_ft_steps if task_name == "names" and setting.names_ft_steps else setting.ft_steps
    config = TrainConfig(steps=steps, batch_size=batch, seq_len=seq_len,
                         peak_lr=learning_rate(setting, method, init),
                         warmup_steps=max(1, int(setting.ft_warmup_fraction * steps)),
                         eval_every=max(1, steps // setting.curve_points), seed=seed, device=str(device))

    def score(m, eval_set) -> dict:
        m.eval()
        with torch.no_grad(), autocast_context(device):
            return task.evaluate(m, eval_set)

    start_value = score(trained, curve_set)["value"]
    history = train(trained, get_batch, config, eval_fn=lambda m: {"value": task.evaluate(m, curve_set)["value"]},
                    progress=False)
    final = score(trained, final_set)
    value = final["value"]
    record = {**_shape_fields(shape), "seed": seed, "method": method, "init": init, "task": task_name,
              "metric": task.metric, "value": value, "trainable_params": trainable_params(trained), "steps": steps,
              "device": str(device), "pretrain_loss": pretrain_loss,
              "curve": [{"step": 0, "value": start_value}] + [{"step": e["step"], "value": e["value"]}
                                                               for e in history["evals"]]}
    assert tuple(record) == RUN_FIELDS
    detail = {k: record[k] for k in DETAIL_KEYS}
    detail["loss"] = final["loss"]  # held-out cross-entropy (hop_k: every position; names: answer tokens)
    if "accuracy_by_k" in final:
        detail["accuracy_by_k"] = {str(k): v for k, v in final["accuracy_by_k"].items()}
    return record, detail


def _worker(job: dict) -> dict:
    """Run one job in a worker process; a failure or the deadline becomes a record, the rest go on."""
    kind, args = job["kind"], job["args"]
    tag = {k: job[k] for k in ("n_layers", "seed", "task", "method", "init") if k in job}
    if job["deadline"] is not None and time.time() > job["deadline"]:
        return {"kind": kind, **tag, "incomplete": "not started: the deadline had passed"}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(job["threads"])  # the workers share the host's cores
        run = pretrain_run if kind == "pretrain" else finetune_run
        out = run(**args, device=job["device"], workdir=job["workdir"], deadline=job["deadline"])
        record, detail = out if kind == "finetune" else (out, None)
        return {"kind": kind, **tag, "record": record, "detail": detail}
    except _Deadline as stop:
        return {"kind": kind, **tag, "incomplete": f"deadline at step {stop.args[0]}"}
    except Exception as exc:  # noqa: BLE001: one failed run is recorded, the rest go on
        return {"kind": kind, **tag, "incomplete": f"error: {exc!r}", "traceback": traceback.format_exc()}
    finally:
        torch.set_num_threads(threads)  # as it was (workers = 1 runs the jobs in the caller's process)


class _Inline:
    """An executor that runs each job at submit (workers = 1: one process, the tests)."""

    def submit(self, fn, *args):
        future: cf.Future = cf.Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, wait=True, cancel_futures=False):
        pass


# ---- the rules (fixed before running) -------------------------------------------------------------------
def _stats(values: list[float]) -> dict:
    m, s = mean_std(values)
    return {"mean": m, "std": s, "n": len(values), "min": min(values), "max": max(values), "values": values}


def compare(deep: list[float], wide: list[float], higher_is_better: bool = True) -> dict:
    """A cell: effect = mean(deep) - mean(wide); resolved for the better shape when |effect| >=
    max(EFFECT_SIGMAS x the larger seed std, EFFECT_FLOOR) and every seed of it beats every seed of the other."""
    d, w = _stats(deep), _stats(wide)
    effect = d["mean"] - w["mean"]
    threshold = max(EFFECT_SIGMAS * max(d["std"], w["std"]), EFFECT_FLOOR)
    sign = 1 if higher_is_better else -1
    if sign * effect >= threshold and (d["min"] > w["max"] if sign > 0 else d["max"] < w["min"]):
        better = "deep"
    elif -sign * effect >= threshold and (w["min"] > d["max"] if sign > 0 else w["max"] < d["min"]):
        better = "wide"
    else:
        better = None
    return {"deep": d, "wide": w, "effect": effect, "threshold": threshold, "better": better}


def cell_runs(runs: list[dict], task: str, method: str, init: str, n_layers: int) -> list[dict]:
    """The run records of one (task, method, init, shape), in seed order: what a cell reads."""
    key = (task, method, init, n_layers)
    return sorted((r for r in runs if (r["task"], r["method"], r["init"], r["n_layers"]) == key), key=lambda r: r["seed"])


def _pearson(x: list[float], y: list[float]) -> float | None:
    if len(x) < 3:
        return None
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def verdict(results: dict) -> dict:
    """The gate, the cells and the verdict, from the file's records alone (rules in the module docstring)."""
    meta = results.get("meta", {})
    layers = sorted({r["n_layers"] for r in results.get("pretrain", [])} | {r["n_layers"] for r in results.get("runs", [])})
    out: dict = {"rules": {
        "gate": f"every base below the unigram loss; names: pretrained full - scratch >= {GATE_TRANSFER} per shape; "
                f"pretrained full >= chance + {GATE_ABOVE_CHANCE['hop_k']} at k = 1 on hop_k and >= chance + "
                f"{GATE_ABOVE_CHANCE['names']} on names, per shape",
        "cell": f"resolved when |mean(deep) - mean(wide)| >= max({EFFECT_SIGMAS} x larger seed std, {EFFECT_FLOOR}) "
                "and the seeds do not overlap",
        "verdict": f">= {MAJORITY} of the 6 method cells for one shape and none for the other; none: no shape "
                   f"effect resolved; 1..{MAJORITY - 1} for one shape only: partly; cells for both: mixed"}}
    if len(layers) < 2:
        out.update(verdict="not decided", reason=f"needs two shapes; have {layers}")
        return out
    wide, deep = layers[0], layers[-1]
    runs = results.get("runs", [])
    details = results.get("details", [])

    def values(task, method, init, n_layers):
        return {r["seed"]: r["value"] for r in cell_runs(runs, task, method, init, n_layers)}

    tasks = sorted({r["task"] for r in runs})
    chance = {"hop_k": meta.get("hop_k", {}).get("chance"), "names": meta.get("names", {}).get("chance")}
    unigram = meta.get("corpus", {}).get("unigram_val_loss")
    bases = results.get("pretrain", [])
    failures = []
    if unigram is None or not bases:
        failures.append("no pre-trained bases or no unigram loss")
    else:
        failures += [f"base L{b['n_layers']} seed {b['seed']} val loss {b['val_loss']:.3f} >= unigram {unigram:.3f}"
                     for b in bases if not b["val_loss"] < unigram]
    gate_inputs: dict = {}
    for L in (wide, deep):
        for task in tasks:
            full = values(task, "full", "pretrained", L)
            scratch = values(task, "full", "scratch", L)
            entry = {"pretrained_full": _stats(list(full.values())) if full else None,
                     "scratch": _stats(list(scratch.values())) if scratch else None, "chance": chance.get(task)}
            gate_inputs[f"L{L} {task}"] = entry
            if not full:
                failures.append(f"L{L} {task}: no pretrained full runs")
                continue
            if task == "hop_k":  # the gate reads k = 1, which both shapes have the depth for
                k1 = [d["accuracy_by_k"]["1"] for d in details
                      if (d["task"], d["method"], d["init"], d["n_layers"]) == ("hop_k", "full", "pretrained", L)]
                entry["pretrained_full_k1"] = _stats(k1) if k1 else None
                gated, what = (entry["pretrained_full_k1"], "at k = 1")
            else:
                gated, what = entry["pretrained_full"], "exact match"
            bar = (chance.get(task) or 0.0) + GATE_ABOVE_CHANCE.get(task, 0.0)
            if gated is None or gated["mean"] < bar:
                failures.append(f"L{L} {task}: pretrained full {what} "
                                f"{'missing' if gated is None else format(gated['mean'], '.3f')} < chance "
                                f"{chance.get(task) or 0.0:.3f} + {GATE_ABOVE_CHANCE.get(task, 0.0)}")
            if task == "names":
                if not scratch:
                    failures.append(f"L{L} names: no scratch runs")
                elif entry["pretrained_full"]["mean"] - entry["scratch"]["mean"] < GATE_TRANSFER:
                    failures.append(f"L{L} names: pretrained full {entry['pretrained_full']['mean']:.3f} does not beat "
                                    f"scratch {entry['scratch']['mean']:.3f} by {GATE_TRANSFER}")
    if "names" not in tasks:
        failures.append("no names runs")
    out["gate"] = {"passed": not failures, "failures": failures, "inputs": gate_inputs}

    cells, gains = {}, {}
    for task in tasks:
        for method in METHODS:
            d, w = values(task, method, "pretrained", deep), values(task, method, "pretrained", wide)
            if d and w:
                cells[f"{task} {method}"] = compare(list(d.values()), list(w.values()))
        per_shape = {}
        for L in (wide, deep):
            full, scratch = values(task, "full", "pretrained", L), values(task, "full", "scratch", L)
            per_shape[L] = [full[s] - scratch[s] for s in sorted(set(full) & set(scratch))]
        if per_shape[wide] and per_shape[deep]:
            gains[task] = compare(per_shape[deep], per_shape[wide])
    out["cells"], out["transfer_gain"] = cells, gains
    up_d = [b["val_loss"] for b in bases if b["n_layers"] == deep]
    up_w = [b["val_loss"] for b in bases if b["n_layers"] == wide]
    out["upstream"] = compare(up_d, up_w, higher_is_better=False) if up_d and up_w else None
    loss_of = {(b["n_layers"], b["seed"]): b["val_loss"] for b in bases}
    out["upstream_vs_downstream"] = {}  # Pearson r of downstream value against the base's held-out loss
    for task in tasks:
        for method in METHODS:
            pairs = [(loss_of[(r["n_layers"], r["seed"])], r["value"]) for r in runs
                     if (r["task"], r["method"], r["init"]) == (task, method, "pretrained")
                     and (r["n_layers"], r["seed"]) in loss_of]
            out["upstream_vs_downstream"][f"{task} {method}"] = _pearson([p[0] for p in pairs], [p[1] for p in pairs])
    out["shapes"] = {"wide": wide, "deep": deep}
    by_k: dict = {}  # hop_k: mean accuracy at each k, per shape, method and init (composition, Petty et al.)
    for d in details:
        if d["task"] == "hop_k" and "accuracy_by_k" in d:
            key = f"L{d['n_layers']} {d['method']} {d['init']}"
            for k, acc in d["accuracy_by_k"].items():
                by_k.setdefault(key, {}).setdefault(k, []).append(acc)
    out["hop_k_by_k"] = {key: {k: sum(v) / len(v) for k, v in ks.items()} for key, ks in sorted(by_k.items())}
    if not out["gate"]["passed"]:
        out.update(verdict="invalid", reason="gate failed: " + "; ".join(failures))
        return out
    # one seed has no spread, so every gap would "resolve": no verdict until each cell has MIN_SEEDS seeds
    seeds_per_cell = [len(values(t, m, "pretrained", L)) for t in tasks for m in METHODS for L in (wide, deep)]
    if min(seeds_per_cell, default=0) < MIN_SEEDS:
        out.update(verdict="not decided", reason=f"{min(seeds_per_cell, default=0)} seed(s) in the thinnest cell, "
                                                 f"{MIN_SEEDS} needed; the gate and the cells are provisional")
        return out
    n_cells = len(TASKS) * len(METHODS)
    if len(cells) < n_cells:
        out.update(verdict="not decided", reason=f"{len(cells)} of the {n_cells} method cells have both shapes")
        return out
    for_deep = sorted(k for k, c in cells.items() if c["better"] == "deep")
    for_wide = sorted(k for k, c in cells.items() if c["better"] == "wide")
    if len(for_deep) >= MAJORITY and not for_wide:
        v = "deep-narrow transfers better"
    elif len(for_wide) >= MAJORITY and not for_deep:
        v = "shallow-wide transfers better"
    elif not for_deep and not for_wide:
        v = "no shape effect resolved"
    elif not for_wide:
        v = "partly deep-narrow"
    elif not for_deep:
        v = "partly shallow-wide"
    else:
        v = "mixed"
    out.update(verdict=v, reason=f"cells for deep (L{deep}): {for_deep or 'none'}; for wide (L{wide}): "
                                 f"{for_wide or 'none'}; of {n_cells}")
    return out


# ---- the whole experiment -------------------------------------------------------------------------------
MERGE_MAY_DIFFER = ("seeds", "workers", "deadline_s")  # how a run is split, not how its models are made


def setting_differences(saved: dict, setting: FinetuneSetting) -> list[str]:
    """The fields of a file's setting (JSON: tuples as lists) that differ from `setting`, as "name: a -> b"."""
    now = json.loads(json.dumps(asdict(setting)))
    return [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in now
            if k not in MERGE_MAY_DIFFER and saved.get(k) != now[k]]


def merge_refusal(path: str, previous: dict, setting: FinetuneSetting) -> str | None:
    """Why the file at `path` (its JSON: `previous`) cannot take this run's seeds, or None when it can: records
    of other seeds join this run's only if they were made the same way."""
    if not isinstance(previous, dict) or not isinstance(previous.get("meta"), dict):
        return (f"--merge: {path} is not a finetune results file (it holds a JSON {type(previous).__name__}"
                f"{'' if not isinstance(previous, dict) else ' without a meta object'}); write to another --out")
    differs = setting_differences(previous.get("meta", {}).get("setting", {}), setting)
    return (f"--merge: {path} was made with another setting ({'; '.join(differs)}); only "
            f"{', '.join(MERGE_MAY_DIFFER)} may differ between merged runs") if differs else None


def run_experiment(setting: FinetuneSetting, device="cpu", out_path: str | None = None, merge: bool = False,
                   log=print, meta: dict | None = None, started: float | None = None) -> dict:
    """Pre-train every (shape, seed), fine-tune each on every task and method, and the scratch controls;
    return (and write, after every run) the results."""
    start = time.time() if started is None else started
    deadline = start + setting.deadline_s
    device = str(torch.device(device))
    bad = [t for t in setting.tasks if t not in TASKS] + [m for m in setting.methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown tasks or methods {bad}: tasks are {TASKS}, methods {METHODS}")
    shapes = {L: shape_of(setting, L) for L in setting.layers}
    rec = recipe(setting)
    previous = {}
    if merge and out_path and os.path.isfile(out_path):
        previous = read_json(out_path, what="results file")
        refusal = merge_refusal(out_path, previous, setting)
        if refusal:
            raise ValueError(refusal)
    planned = {(L, s) for L in setting.layers for s in setting.seeds}
    keep = lambda r: (r["n_layers"], r["seed"]) not in planned  # noqa: E731
    results = {
        "meta": {"setting": asdict(setting), "device": device, "device_name": device_name(device),
                 "torch": torch.__version__, "python": platform.python_version(),
                 "date": datetime.date.today().isoformat(), "budget": budget(setting),
                 "shapes": {L: {"name": s.name, **s.config.to_dict(), "non_embedding": s.non_embedding,
                                "budget_error": s.budget_error} for L, s in shapes.items()},
                 "pretrain_recipe": rec,
                 "learning_rates": {f"{m} {i}": learning_rate(setting, m, i)
                                    for m in METHODS for i in ("pretrained", "scratch") if i == "pretrained" or m == "full"},
                 # meta.setting.seeds are this command's; a merged file holds these too
                 "seeds_in_file": sorted({r["seed"] for r in previous.get("pretrain", []) if keep(r)}
                                         | set(setting.seeds)),
                 "previous_meta": previous.get("meta"), **(meta or {})},
        "pretrain": [r for r in previous.get("pretrain", []) if keep(r)],
        "runs": [r for r in previous.get("runs", []) if keep(r)],
        "details": [r for r in previous.get("details", []) if keep(r)],
        "incomplete": [r for r in previous.get("incomplete", []) if "n_layers" in r and keep(r)],
        "verdict": None,
    }

    def save():
        results["verdict"] = verdict(results)
        if out_path:
            write_json_atomic(out_path, results)

    log(f"finetune on {device_name(device)}: budget {budget(setting):,} non-embedding parameters; pre-training "
        f"{rec['steps']} steps x {rec['batch_sequences']} x {setting.seq_len} tokens at {rec['peak_lr']:.2e}; "
        f"fine-tuning {setting.ft_steps} steps; {setting.workers} runs at a time; deadline {setting.deadline_s:.0f} s")
    for L, s in shapes.items():
        log(f"  L{L:<3d} {s.name:18s} non-embedding {s.non_embedding:,} ({s.budget_error:+.2%})")

    workdir = tempfile.mkdtemp(prefix="minids-finetune-")
    # threads per run: oversubscribed cores make every OpenMP region wait for a descheduled thread, so leave
    # one core to the main process and the rest of the host (on two shared cores a step got 15x slower)
    threads = max(1, ((os.cpu_count() or 1) - 1) // max(1, setting.workers))
    common = dict(device=device, workdir=workdir, deadline=deadline, threads=threads)
    if setting.workers <= 1:
        pool = _Inline()
    else:
        pool = cf.ProcessPoolExecutor(max_workers=setting.workers, mp_context=multiprocessing.get_context("spawn"))
    pending: dict = {}

    def lost(job, why):  # a job that never produced a record of its own
        return {"kind": job["kind"], **{k: job[k] for k in DETAIL_KEYS if k in job}, "incomplete": why}

    def submit(job):
        try:
            pending[pool.submit(_worker, job)] = job
        except Exception as exc:  # noqa: BLE001: a broken pool (a worker killed, e.g. out of memory)
            note(lost(job, f"not started: {exc!r}"))

    def finetune_jobs(L, seed, init):
        return [{"kind": "finetune", "n_layers": L, "seed": seed, "task": t, "method": m, "init": init, **common,
                 "args": dict(setting=setting, n_layers=L, seed=seed, task_name=t, method=m, init=init)}
                for t in setting.tasks for m in (setting.methods if init == "pretrained" else ("full",))]

    def note(done):
        tag = " ".join(f"{k}={done[k]}" for k in ("n_layers", "seed", "task", "method", "init") if k in done)
        if "incomplete" in done:
            results["incomplete"].append({k: v for k, v in done.items() if k not in ("record", "detail")})
            log(f"  [{time.time() - start:4.0f} s] {done['kind']} {tag}: {done['incomplete']}")
            return False
        r = done["record"]
        if done["kind"] == "pretrain":
            results["pretrain"].append(r)
            log(f"  [{time.time() - start:4.0f} s] pretrain L{r['n_layers']} seed {r['seed']}: val loss "
                f"{r['val_loss']:.3f} ({r['train_seconds']:.0f} s, {r['tokens_per_s'] / 1e3:.0f}K tokens/s)")
        else:
            results["runs"].append(r)
            results["details"].append(done["detail"])
            log(f"  [{time.time() - start:4.0f} s] {tag}: {r['metric']} {r['value']:.3f}")
        return True

    try:
        results["meta"]["corpus"] = prepare_corpus(setting, workdir, log)
        save()
        for L in sorted(setting.layers, reverse=True):  # the slowest first
            for seed in setting.seeds:
                submit({"kind": "pretrain", "n_layers": L, "seed": seed, **common,
                        "args": dict(setting=setting, n_layers=L, seed=seed)})
        if "names" in setting.tasks:
            results["meta"]["names"] = prepare_names(setting, workdir, log)
        if "hop_k" in setting.tasks:
            results["meta"]["hop_k"] = {"n": setting.hop_n, "max_hops": setting.hop_max,
                                        "chance": make_task(setting, "hop_k", workdir).chance,
                                        "metric": "mean accuracy over k = 1..max_hops"}
        for L in sorted(setting.layers, reverse=True):
            for seed in setting.seeds:
                for job in finetune_jobs(L, seed, "scratch"):
                    submit(job)
        while pending:
            finished, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
            for future in finished:
                job = pending.pop(future)
                try:
                    done = future.result()
                except Exception as exc:  # noqa: BLE001: the worker process died under this job
                    done = lost(job, f"worker died: {exc!r}")
                ok = note(done)
                if done["kind"] == "pretrain":
                    for ft_job in finetune_jobs(job["n_layers"], job["seed"], "pretrained"):
                        if ok:
                            submit(ft_job)
                        else:
                            results["incomplete"].append(lost(ft_job, "its base did not finish"))
                save()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(workdir, ignore_errors=True)
    results["meta"]["total_seconds"] = time.time() - start
    save()
    v = results["verdict"]
    log(f"{len(results['runs'])} fine-tunes, {len(results['incomplete'])} incomplete, {time.time() - start:.0f} s; "
        f"gate {'PASSED' if v.get('gate', {}).get('passed') else 'FAILED'}; verdict: {v['verdict']} ({v['reason']})")
    return results


def main(argv=None) -> None:
    started = time.time()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--setting", choices=sorted(SETTINGS), help="size preset (default: the device's type)")
    parser.add_argument("--out", default="data/results", help="folder for finetune_<device>.json")
    parser.add_argument("--layers", type=int, nargs="+", help="the shapes' depths (default: the setting's)")
    parser.add_argument("--seeds", type=nonnegative_int, nargs="+", help="seeds (default: the setting's)")
    parser.add_argument("--pretrain-tokens", type=positive_float,
                        help="pre-training tokens per base (default: the setting's)")
    parser.add_argument("--ft-steps", type=positive_int, help="fine-tuning steps per run (default: the setting's)")
    parser.add_argument("--names-steps", type=positive_int,
                        help="fine-tuning steps of the names task only (default: the setting's; cuda: 800, "
                             "after a run at 300 steps failed the gate with its curves still rising)")
    parser.add_argument("--full-lr-scale", type=positive_float,
                        help="full fine-tuning's peak learning rate as a fraction of pre-training's (default: the "
                             "setting's)")
    parser.add_argument("--workers", type=positive_int, help="runs side by side (default: the setting's)")
    parser.add_argument("--deadline-s", type=nonnegative_float, help="stop runs this many seconds after the start")
    parser.add_argument("--merge", action="store_true", help="keep the file's records of (shape, seed)s not run here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    try:
        import peft  # noqa: F401
    except ImportError:
        parser.error("the LoRA runs need the peft library (pip install peft; requirements.txt pins the version)")
    setting = SETTINGS[args.setting or ("cuda" if device.type == "cuda" else "cpu")]
    changes = {k: v for k, v in (("layers", tuple(args.layers) if args.layers else None),
                                 ("seeds", tuple(args.seeds) if args.seeds else None),
                                 ("pretrain_tokens", args.pretrain_tokens), ("ft_steps", args.ft_steps),
                                 ("names_ft_steps", args.names_steps), ("full_lr_scale", args.full_lr_scale),
                                 ("workers", args.workers), ("deadline_s", args.deadline_s)) if v is not None}
    if any(L < 1 for L in changes.get("layers", ())) or len(set(changes.get("layers", (1, 2)))) < 2:
        parser.error(f"--layers needs at least two different positive depths, got {args.layers}")
    setting = replace(setting, **changes)
    out_path = os.path.join(args.out, f"finetune_{device.type}.json")
    check_out(parser, out_path, merge=args.merge)  # before any work: a bad --out never costs a run
    if args.merge and os.path.isfile(out_path):  # refuse before any work (run_experiment checks it again)
        refusal = merge_refusal(out_path, read_json(out_path, what="results file"), setting)
        if refusal:
            parser.error(refusal)
    command = " ".join(["python -m minids.experiments.finetune"] + [shlex.quote(a) for a in sys.argv[1:]])
    run_experiment(setting, device, out_path, merge=args.merge, log=lambda s: print(s, flush=True),
                   meta={"command": command}, started=started)


if __name__ == "__main__":
    main()
