"""Pre-norm against post-norm in a deep stack: the scale of the residual stream and of the gradients, layer by layer.

DeepSeek LLM normalises the *input* of each block (pre-norm, as minids.layer.DecoderLayer does):

    pre:   h = x + Attn(RMSNorm(x));        y = h + FFN(RMSNorm(h))

The original Transformer (Vaswani et al. 2017) normalised the *sum* after each block (post-norm):

    post:  h = RMSNorm(x + Attn(x));        y = RMSNorm(h + FFN(h))

In the pre-norm stack the residual stream is never normalised on its way from the embedding to the final
norm: the identity path carries gradients from the loss to every layer unchanged. In the post-norm stack every
gradient passes through 2 * n_layers normalisations (190 in the 67B), each of which rescales it and projects
out one direction. `depth_profile` measures both on the same weights: the root-mean-square (RMS) of the
residual stream after each layer, and the norm of the gradient that reaches each layer's parameters.

The post-norm layer below reuses the very modules of a minids `DecoderLayer` (its two RMSNorms, its attention,
its SwiGLU), only wired in the other order: input_layernorm after attention, post_attention_layernorm after
the FFN. Nothing is re-typed, so the two placements differ in wiring and nothing else.

Run `python -m minids.experiments.norm_placement` to measure the 95-layer miniature (deepseek-llm-67b-mini)
at init for a few init scales (data/results/norm_placement.json; a few minutes on a laptop CPU); add
`--train-steps 300 --device cuda` for short training runs of both placements (a GPU is advised). To add
runs to a results file instead of replacing it, one learning rate at a time and without the at-init profiles:

    python -m minids.experiments.norm_placement --device cuda --init-stds --train-steps 300 --train-lrs 3e-3 --merge
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..config import ModelConfig
from ..layer import DecoderLayer
from ..model import DeepSeekLM
from ..results import write_json_atomic
from .cli import check_out, nonnegative_float, nonnegative_int, positive_float, positive_int

PLACEMENTS = ("pre", "post")


def post_norm_layer(layer: DecoderLayer, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """One post-norm layer built from a minids DecoderLayer's own modules: normalise after each residual add."""
    h = layer.input_layernorm(x + layer.self_attn(x, cos, sin))
    return layer.post_attention_layernorm(h + layer.mlp(h))


def forward_with_placement(
    model: DeepSeekLM, ids: torch.Tensor, placement: str = "pre"
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits (b, t, vocab) and the residual stream [embedding output, after layer 1, ..., after layer L].

    placement="pre" runs every DecoderLayer's own forward, so the logits equal `model(ids)` exactly (a test
    checks it); placement="post" runs `post_norm_layer` on the same weights. The final RMSNorm and lm_head are
    the model's in both cases.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    positions = torch.arange(ids.shape[1], device=ids.device)
    cos, sin = model.rope(positions)
    x = model.embed_tokens(ids)  # (b, t, d_model): the residual stream
    stream = [x]
    for layer in model.layers:
        x = layer(x, cos, sin) if placement == "pre" else post_norm_layer(layer, x, cos, sin)
        stream.append(x)
    return model.lm_head(model.norm(x)), stream


@dataclass
class DepthProfile:
    """What reaches each depth of the stack, for one placement (index i = layer i + 1; 0 is the embedding)."""

    placement: str
    stream_rms: list[float]  # RMS of the residual stream: after the embedding, then after each layer (L + 1)
    stream_grad_rms: list[float]  # RMS of d loss / d stream at the same L + 1 points
    param_grad_norm: list[float]  # L2 norm of the gradient of all of layer i's parameters (L values)
    loss: float

    def as_dict(self) -> dict:
        return asdict(self)


def _rms(t: torch.Tensor) -> float:
    return t.detach().double().pow(2).mean().sqrt().item()


def _grad_norm(module: torch.nn.Module) -> float:
    squares = [p.grad.double().pow(2).sum() for p in module.parameters() if p.grad is not None]
    return torch.stack(squares).sum().sqrt().item() if squares else 0.0


def random_batch(config: ModelConfig, batch: int, seq_len: int, seed: int) -> torch.Tensor:
    """Uniform random token ids (b, seq_len + 1) from a seeded generator: inputs and next-token targets."""
    if not (1 <= seq_len <= config.max_seq_len and batch >= 1):
        raise ValueError(f"need batch >= 1 and 1 <= seq_len <= max_seq_len ({config.max_seq_len}); "
                         f"got batch {batch}, seq_len {seq_len}")
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.vocab_size, (batch, seq_len + 1), generator=g)


def depth_profile(model: DeepSeekLM, ids: torch.Tensor, placement: str = "pre") -> DepthProfile:
    """One forward and backward of the next-token loss on ids (b, t + 1); the model's grads are overwritten."""
    model.zero_grad(set_to_none=True)
    logits, stream = forward_with_placement(model, ids[:, :-1], placement)
    for x in stream:
        x.retain_grad()
    loss = F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())
    loss.backward()
    profile = DepthProfile(
        placement=placement,
        stream_rms=[_rms(x) for x in stream],
        stream_grad_rms=[_rms(x.grad) for x in stream],
        param_grad_norm=[_grad_norm(layer) for layer in model.layers],
        loss=loss.item(),
    )
    model.zero_grad(set_to_none=True)
    return profile


def build(config: ModelConfig, seed: int = 0, init_std: float | None = None, device="cpu") -> DeepSeekLM:
    """The model in float32, initialised N(0, init_std) (the config's own std by default) from `seed`."""
    torch.manual_seed(seed)
    model = DeepSeekLM(config, device="meta").materialize(device, torch.float32, init=False)
    model.init_weights(init_std)
    return model


def measure_at_init(
    config: ModelConfig, init_std: float | None = None, batch: int = 1, seq_len: int = 32, seed: int = 0,
    device="cpu",
) -> dict[str, DepthProfile]:
    """Pre- and post-norm profiles of the same freshly initialised weights on the same random batch."""
    model = build(config, seed, init_std, device)
    ids = random_batch(config, batch, seq_len, seed).to(device)
    return {p: depth_profile(model, ids, p) for p in PLACEMENTS}


def train_losses(
    config: ModelConfig,
    placement: str,
    steps: int,
    lr: float,
    init_std: float | None = None,
    batch: int = 8,
    seq_len: int = 128,
    seed: int = 0,
    device="cpu",
    log_every: int = 0,
    deadline: float | None = None,
) -> list[float]:
    """Loss after each AdamW step (the paper's betas 0.9/0.95 and weight decay 0.1, clip 1.0, no warm-up).

    The task is a fixed random permutation of the vocabulary applied token by token (target = perm[input]):
    one layer could learn it, so the curve shows how well the *stack* passes the signal, not how hard the
    task is (the loss starts near ln(vocab_size) and can reach 0). A run stops at the first non-finite loss,
    or once time.perf_counter() passes `deadline` (so fewer than `steps` losses may come back).
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    model = build(config, seed, init_std, device)
    g = torch.Generator().manual_seed(seed + 1)
    perm = torch.randperm(config.vocab_size, generator=g).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    losses: list[float] = []
    for step in range(steps):
        ids = torch.randint(0, config.vocab_size, (batch, seq_len), generator=g).to(device)
        logits, _ = forward_with_placement(model, ids, placement)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), perm[ids].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"    {placement}-norm lr {lr:g} step {step + 1}/{steps}: loss {losses[-1]:.4f}", flush=True)
        if not math.isfinite(losses[-1]) or (deadline is not None and time.perf_counter() > deadline):
            break
    return losses


# ---- the command: every measurement recorded on its own, in the shared record format -----------------------

def _record(metric, value, unit, device, **extra) -> dict:
    """One result in the shape of benchmarks/records.py (metric, impl, model, value, unit, device, torch, ...)."""
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return {"metric": metric, "impl": "minids", "model": extra.pop("model"), "value": value, "unit": unit,
            "device": name, "torch": torch.__version__, "date": datetime.date.today().isoformat(),
            "command": "python -m minids.experiments.norm_placement " + " ".join(sys.argv[1:]), **extra}


def _key(record: dict) -> tuple:
    """What a record measures: a newer record with the same key replaces it under --merge."""
    return tuple(record.get(k) for k in ("metric", "kind", "placement", "init_std", "lr"))


def _previous_records(path: str) -> list[dict]:
    """The records of an earlier norm_placement run at `path`; another experiment's file (or a damaged one)
    is refused with a message naming it, before anything is measured or written."""
    if not os.path.exists(path):
        return []
    from ..files import read_json

    records = read_json(path, what="results file")
    if not isinstance(records, list):
        raise ValueError(f"--merge: {path} does not hold a list of records; refusing to overwrite it")
    foreign = [r for r in records if not isinstance(r, dict) or "metric" not in r
               or "minids.experiments.norm_placement" not in str(r.get("command", ""))]
    if foreign:
        raise ValueError(f"--merge: {path} holds {len(foreign)} records that norm_placement did not write "
                         f"(e.g. {str(foreign[0])[:80]}); refusing to merge into another experiment's file")
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Pre-norm vs post-norm through depth (see the module docstring).")
    ap.add_argument("--preset", default="deepseek-llm-67b-mini")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="data/results/norm_placement.json", help="JSON file (or a folder for it)")
    ap.add_argument("--init-stds", type=float, nargs="*", default=[0.006, 0.034, 0.0625],
                    help="weight init std of each at-init profile (0.006 is the paper's); give none to skip them")
    ap.add_argument("--seq-len", type=positive_int, default=32, help="tokens per sequence of the at-init profiles")
    ap.add_argument("--train-steps", type=nonnegative_int, default=0, help="0: no training runs")
    ap.add_argument("--train-lrs", type=positive_float, nargs="+", default=[3e-4, 1e-3])
    ap.add_argument("--train-init-std", type=positive_float, default=0.006)
    ap.add_argument("--train-batch", type=positive_int, default=8)
    ap.add_argument("--train-seq-len", type=positive_int, default=128)
    ap.add_argument("--time-limit", type=nonnegative_float, default=420.0,
                    help="seconds; later measurements are skipped")
    ap.add_argument("--quick", action="store_true", help="3 layers, one init std, 3 training steps: a smoke test")
    ap.add_argument("--merge", action="store_true",
                    help="keep the records already in --out that this run does not measure again (e.g. one learning "
                         "rate per call, or GPU training runs beside CPU at-init profiles)")
    args = ap.parse_args(argv)
    cfg = ModelConfig.preset(args.preset)
    if args.quick:
        cfg = cfg.replace(n_layers=3)
        args.init_stds, args.train_lrs, args.train_steps = args.init_stds[:1], args.train_lrs[:1], 3
        args.seq_len, args.train_batch, args.train_seq_len = 8, 2, 16
    out = os.path.join(args.out, "norm_placement.json") if os.path.isdir(args.out) else args.out
    check_out(ap, out, merge=args.merge)  # before any work: a bad --out never costs a run
    # read even without --merge: a file that another experiment wrote is not replaced either
    kept = _previous_records(out) if args.merge else (_previous_records(out) and [])
    if not args.init_stds and not args.train_steps:
        ap.error("nothing to measure: give --init-stds values or --train-steps > 0")
    torch.manual_seed(0)
    t0 = time.perf_counter()
    records, failures = [], 0
    jobs = [("init", s, None) for s in args.init_stds]
    if args.train_steps:
        jobs += [("train", args.train_init_std, lr) for lr in args.train_lrs]
    for kind, std, lr in jobs:
        if time.perf_counter() - t0 > args.time_limit:
            print(f"time limit reached: skipping {kind} std {std} lr {lr}", flush=True)
            continue
        common = dict(model=args.preset, n_layers=cfg.n_layers, init_std=std)
        try:
            if kind == "init":
                for p, prof in measure_at_init(cfg, std, seq_len=args.seq_len, device=args.device).items():
                    for metric, unit in (("stream_rms", "RMS"), ("stream_grad_rms", "RMS"),
                                         ("param_grad_norm", "L2 norm")):
                        records.append(_record(metric, getattr(prof, metric), unit, args.device, placement=p,
                                               seq_len=args.seq_len, loss=prof.loss, **common))
            else:
                for p in PLACEMENTS:
                    losses = train_losses(cfg, p, args.train_steps, lr, std, args.train_batch, args.train_seq_len,
                                          device=args.device, log_every=max(1, args.train_steps // 5),
                                          deadline=t0 + args.time_limit)
                    records.append(_record("train_loss", losses, "nats", args.device, placement=p, lr=lr,
                                           steps=args.train_steps, completed=len(losses) == args.train_steps,
                                           batch=args.train_batch, seq_len=args.train_seq_len, **common))
            print(f"{kind} std {std} lr {lr}: done at {time.perf_counter() - t0:.1f} s", flush=True)
        except Exception as e:  # one failed measurement must not lose the others
            failures += 1
            print(f"{kind} std {std} lr {lr}: FAILED {type(e).__name__}: {e}", flush=True)
            records.append(_record("failure", f"{type(e).__name__}: {e}", "", args.device, kind=kind, lr=lr,
                                   **common))
        # after every measurement, so an interrupted run keeps what it had
        measured = {_key(r) for r in records}
        write_json_atomic(out, [r for r in kept if _key(r) not in measured] + records)
    print(f"wrote {len(records)} records to {out} in {time.perf_counter() - t0:.1f} s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
