"""Pre-train the miniature: a 16M-parameter DeepSeek-shaped model that writes Python, committed with minids.

    python -m minids.experiments.miniature cuda        # one H200, a few minutes; writes the folder below
    python -m minids.experiments.miniature tiny        # seconds on a CPU (the test's setting)

The shape keeps what defines DeepSeek LLM at 1/12.8 of the 7B's width (about 1/430 of its parameters): pre-norm RMSNorm, RoPE, SwiGLU with
d_ff / d_model = 2.8, grouped-query attention 8:1 (16 query heads of 20 channels share 2 key/value heads,
8 to each: the 67B's ratio in two groups, so that it is GQA and not multi-query attention), untied
embedding and lm_head, 10 layers of width 320. The recipe is the paper's: AdamW (0.9, 0.95), weight decay
0.1, clip 1.0, warm-up then the multi-step schedule (80% / 10% / 10% of the steps at 100% / 31.6% / 10% of
the peak), bf16 autocast, and the peak learning rate and batch size from its Eq. 1 for the
compute C = M * D of the run. The data is the project's corpus of Python source (minids.data.pretrain)
cut by the project's tokenizer (data/tokenizer), documents joined by the end-of-sentence token.

The training split is 16.3M tokens, so a run of D tokens sees it D / 16.3M times. The validation split (files the
model never saw) is scored every `eval_every` steps; the weights with the best validation loss are the
ones kept and saved, in bf16, as a Hugging Face folder (`DeepSeekLM.save_hf`) that minids'
`DeepSeekLM.from_hf` and transformers' `AutoModelForCausalLM` both load.

Held-out loss is reported in bits per byte: the summed cross-entropy of every validation token, in bits,
divided by the UTF-8 bytes those tokens spell. Unlike nats per token it does not depend on the tokenizer,
so it can be set beside a byte-level baseline (minids.ngram) scored on the same text.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import time
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

from ..config import ModelConfig
from .cli import check_out, positive_float
from ..paths import PROJECT_ROOT, project_path
from ..scaling import training_recipe
from ..results import write_json_atomic  # the one atomic JSON writer (refuses to replace what is not JSON)

NAME = "minids-py-16m"

CONFIG = ModelConfig(vocab_size=8064, d_model=320, n_layers=10, n_heads=16, n_kv_heads=2, d_ff=896,
                     max_seq_len=1024)


@dataclass(frozen=True)
class MiniSetting:
    config: ModelConfig
    seq_len: int
    tokens: float  # D: training tokens (Eq. 1 turns C = M * D into the peak lr and the batch)
    budget_s: float  # fewer steps if the calibrated step time would not fit (recorded)
    eval_every: int
    warmup_fraction: float = 0.03
    compile: bool = False
    val_windows: int | None = None  # None: the whole validation split
    seed: int = 0
    text_chars: int | None = None  # use only the first characters of the corpus (tests)


SETTINGS = {
    "cuda": MiniSetting(config=CONFIG, seq_len=1024, tokens=3e8, budget_s=420.0, eval_every=200, compile=True),
    "tiny": MiniSetting(config=CONFIG.replace(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
                                              max_seq_len=64),
                        seq_len=64, tokens=6e4, budget_s=60.0, eval_every=10, val_windows=16,
                        text_chars=400_000),
}


# ---- data ---------------------------------------------------------------------------------------------
def split_documents(text: str) -> list[str]:
    """The corpus files, each starting at its `# file: ` header line."""
    return [d for d in re.split(r"\n(?=# file: )", text) if d.strip()]


def token_stream(text: str, tokenizer) -> torch.Tensor:
    """Every document's ids, joined by eos (one long 1-D tensor; tokenizers encodes documents in parallel)."""
    encodings = tokenizer.backend.encode_batch(split_documents(text), add_special_tokens=False)
    ids: list[int] = []
    for enc in encodings:
        ids.extend(enc.ids)
        ids.append(tokenizer.eos_id)
    return torch.tensor(ids, dtype=torch.long)


def token_bytes(tokenizer, vocab_size: int) -> torch.Tensor:
    """UTF-8 bytes each id spells (0 for special and unused ids). Byte-level BPE writes every byte as one
    printable character (GPT-2's byte-to-unicode table), so a token's byte count is its string's length."""
    special = set(tokenizer.backend.get_added_tokens_decoder())
    out = torch.zeros(vocab_size, dtype=torch.long)
    for i in range(tokenizer.vocab_size):
        if i not in special:
            out[i] = len(tokenizer.backend.id_to_token(i))
    return out


def random_windows(stream: torch.Tensor, batch: int, seq_len: int):
    """get_batch for minids.train: `batch` windows of seq_len + 1 tokens at uniform random offsets."""
    offsets = torch.arange(seq_len + 1, device=stream.device)

    def get_batch(step: int, generator: torch.Generator):
        starts = torch.randint(0, len(stream) - seq_len - 1, (batch, 1), generator=generator)
        w = stream[starts.to(stream.device) + offsets]
        return w[:, :-1], w[:, 1:]

    return get_batch


def val_windows(stream: torch.Tensor, seq_len: int, limit: int | None = None) -> torch.Tensor:
    """Consecutive windows (n, seq_len + 1) overlapping by one token: every token but the first is a target once."""
    n = (len(stream) - 1) // seq_len
    if limit is not None:
        n = min(n, limit)
    idx = torch.arange(n)[:, None] * seq_len + torch.arange(seq_len + 1)
    return stream[idx.to(stream.device)]


def load_corpus(seq_len: int, n_windows: int | None, vocab_size: int, text_chars: int | None, device) -> dict:
    """The pre-training corpus as the studies that train on it read it: token streams of the train split, the
    held-out windows of the val split, the bytes of every token (for bits per byte) and the texts themselves
    (cut to their first text_chars characters when that is set, for quick settings)."""
    from ..data.pretrain import pretrain_text
    from ..paths import project_path
    from ..tokenizer import Tokenizer

    tokenizer = Tokenizer.from_dir(project_path("data", "tokenizer"))
    texts = {split: pretrain_text(split) for split in ("train", "val")}
    if text_chars:
        texts = {split: t[:text_chars] for split, t in texts.items()}
    streams = {split: token_stream(t, tokenizer).to(device) for split, t in texts.items()}
    return {"train": streams["train"], "windows": val_windows(streams["val"], seq_len, n_windows),
            "nbytes": token_bytes(tokenizer, vocab_size), "texts": texts, "train_tokens": len(streams["train"])}


@torch.no_grad()
def held_out_loss(model, windows: torch.Tensor, nbytes: torch.Tensor, batch: int = 32) -> dict:
    """Mean nats per token and bits per byte over validation windows (bytes: token_bytes of the targets)."""
    nll, tokens, byte_count = 0.0, 0, 0
    for i in range(0, len(windows), batch):
        w = windows[i:i + batch]
        logits = model(w[:, :-1], validate=False)
        target = w[:, 1:]
        nll += F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), reduction="sum").item()
        tokens += target.numel()
        byte_count += int(nbytes.to(target.device)[target].sum())
    return {"val_loss": nll / tokens, "val_bpb": nll / math.log(2) / byte_count, "val_tokens": tokens,
            "val_bytes": byte_count}


# ---- the run ------------------------------------------------------------------------------------------
def recipe(setting: MiniSetting) -> dict:
    """Eq. 1 for C = M * D: the peak learning rate and the batch (rounded to whole sequences, a multiple of 8)."""
    r = training_recipe(setting.config, setting.tokens, seq_len=setting.seq_len)
    batch = max(8, int(round(r.batch_tokens / setting.seq_len / 8)) * 8)
    return {"peak_lr": r.lr, "batch_sequences": batch, "batch_tokens": batch * setting.seq_len, "M": r.M,
            "C": r.C, "eq1_batch_tokens": r.batch_tokens}


def pretrain(setting: MiniSetting, device: str = "cpu", out_dir=None, log=print, progress: bool = True) -> dict:
    """Train the miniature; save the best-validation weights to out_dir (if given); return the record."""
    from ..data.pretrain import pretrain_text
    from ..fast import compile_model
    from ..model import DeepSeekLM
    from ..tokenizer import Tokenizer
    from ..train import TrainConfig, train
    from .depth_vs_width import binned, device_name

    t0 = time.perf_counter()
    tokenizer = Tokenizer.from_dir(project_path("data", "tokenizer"))
    if tokenizer.vocab_size > setting.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but the config only {setting.config.vocab_size}")
    texts = {s: pretrain_text(s) for s in ("train", "val")}
    if setting.text_chars:
        texts = {s: t[:setting.text_chars] for s, t in texts.items()}
    streams = {s: token_stream(t, tokenizer).to(device) for s, t in texts.items()}
    nbytes = token_bytes(tokenizer, setting.config.vocab_size)
    log(f"tokens: train {len(streams['train']):,}, val {len(streams['val']):,} "
        f"({time.perf_counter() - t0:.0f} s to tokenize)")
    windows = val_windows(streams["val"], setting.seq_len, setting.val_windows)

    rec = recipe(setting)
    get_batch = random_windows(streams["train"], rec["batch_sequences"], setting.seq_len)
    torch.manual_seed(setting.seed)
    model = DeepSeekLM(setting.config, device=device)
    if setting.compile:
        compile_model(model)

    def config_for(steps: int) -> TrainConfig:
        return TrainConfig(steps=steps, batch_size=rec["batch_sequences"], seq_len=setting.seq_len,
                           peak_lr=rec["peak_lr"], warmup_steps=max(1, int(setting.warmup_fraction * steps)),
                           eval_every=setting.eval_every, seed=setting.seed, schedule="multistep", device=device)

    # Calibrate: a few steps to compile and warm up, then a few timed ones; then start again from the init.
    train(model, get_batch, config_for(3), progress=False)
    probe = train(model, get_batch, config_for(10), progress=False)
    step_s = probe["train_seconds"] / 10
    wanted = int(setting.tokens // rec["batch_tokens"])
    steps = max(setting.eval_every, min(wanted, int(setting.budget_s / step_s)))
    steps = steps // setting.eval_every * setting.eval_every
    log(f"batch {rec['batch_sequences']} x {setting.seq_len} = {rec['batch_tokens']:,} tokens, peak lr "
        f"{rec['peak_lr']:.2e} (Eq. 1), {1e3 * step_s:.1f} ms/step -> {steps:,} steps "
        f"({steps * rec['batch_tokens'] / 1e6:.0f}M tokens; {wanted:,} wanted)")
    torch.manual_seed(setting.seed)
    model.init_weights()

    best = {"val_loss": float("inf")}

    def evaluate(m) -> dict:
        result = held_out_loss(m, windows, nbytes)
        if result["val_loss"] < best["val_loss"]:
            best.update(result, state={k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()})
        return result

    history = train(model, get_batch, config_for(steps), eval_fn=evaluate, progress=progress)
    for e in history["evals"]:
        if e["val_loss"] == best["val_loss"]:
            best["step"] = e["step"]
            break
    log(f"best validation: {best['val_loss']:.4f} nats/token = {best['val_bpb']:.4f} bits/byte at step "
        f"{best['step']:,} of {steps:,} ({history['tokens_per_s'] / 1e6:.2f}M tokens/s)")

    final = DeepSeekLM(setting.config, device="cpu")
    final.load_state_dict(best.pop("state"))
    final.eval()
    if out_dir is not None:
        final.save_hf(out_dir, tokenizer=tokenizer, dtype=torch.bfloat16)
    bf16 = held_out_loss(final.to(device=device, dtype=torch.bfloat16), windows, nbytes)
    curve_steps, curve_losses = binned(history["losses"], bins=100)
    train_tokens = len(streams["train"])
    return {
        "record": "miniature", "name": NAME, "setting": _setting_dict(setting), "device": str(device),
        "device_name": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"), "command": f"python -m minids.experiments.miniature {_name_of(setting)}",
        "config": setting.config.to_dict(), "params": final.num_parameters(), **rec, "steps": steps,
        "steps_wanted": wanted, "warmup_steps": config_for(steps).warmup_steps, "ms_per_step_calibrated": 1e3 * step_s,
        "tokens_seen": history["tokens"], "train_tokens": train_tokens, "epochs": history["tokens"] / train_tokens,
        "train_seconds": history["train_seconds"], "tokens_per_s": history["tokens_per_s"],
        "curve": {"steps": curve_steps, "loss": curve_losses}, "evals": history["evals"],
        "best": {k: best[k] for k in ("step", "val_loss", "val_bpb", "val_tokens", "val_bytes")},
        "best_bf16": bf16, "val_tokens_per_byte": bf16["val_tokens"] / bf16["val_bytes"],
        "total_seconds": time.perf_counter() - t0,
    }


def _name_of(setting: MiniSetting) -> str:
    return next((k for k, v in SETTINGS.items() if v == setting), "custom")


def _setting_dict(setting: MiniSetting) -> dict:
    d = asdict(setting)
    d["config"] = setting.config.to_dict()
    return d


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("setting", choices=sorted(SETTINGS), help="cuda: one H200, minutes; tiny: seconds on a CPU")
    p.add_argument("--device", default=None, help="default: cuda for the cuda setting, else cpu")
    p.add_argument("--out", default=None, help=f"checkpoint folder (default data/checkpoints/{NAME} for cuda)")
    p.add_argument("--results", default=None, help="record (default data/results/miniature_<setting>.json)")
    p.add_argument("--budget-s", type=positive_float, default=None, help="training seconds to fit at most")
    args = p.parse_args(argv)
    setting = SETTINGS[args.setting]
    if args.budget_s is not None:
        setting = replace(setting, budget_s=args.budget_s)
    device = args.device or ("cuda" if args.setting == "cuda" else "cpu")
    out = args.out or (PROJECT_ROOT / "data" / "checkpoints" / NAME if args.setting == "cuda" else None)
    results = args.results or PROJECT_ROOT / "data" / "results" / f"miniature_{args.setting}.json"
    check_out(p, results)  # before any work: a bad --results never costs a run
    if out is not None:  # and a folder that save_hf would refuse at the end is refused now
        from ..hf import MODEL_FOLDER_FILES
        from ..results import check_replaceable, folder_of

        try:
            check_replaceable(out, "model folder", folder_of(MODEL_FOLDER_FILES, (".safetensors",), ("config.json",)),
                              False, "--out")
        except OSError as exc:
            p.error(str(exc))
    record = pretrain(setting, device=device, out_dir=out)
    write_json_atomic(results, record)
    print(f"wrote {results}" + (f" and {out}" if out else ""))


if __name__ == "__main__":
    main()
