"""Chapter 07's figures: the miniature's training and bits per byte (in and outside its corpus), and batched
decode on one H200, each read from a committed results file."""

from __future__ import annotations

KERNELS = ("sdpa", "einsum")  # the decode-attention kernels chapter 07 compares (the file may hold others)


def best_decode(batched: list[dict], kv: int, context: int, impl: str = "minids", metric: str = "decode_tok_s",
                model: str = "deepseek-llm-7b", kernels: tuple | None = KERNELS) -> dict[int, float]:
    """Per batch, the best of the decode-attention kernels in `kernels` (default KERNELS, the ones that do not
    split the cache; None: any; for transformers: its one path), from batched_decode_gpu.json's records."""
    out: dict[int, float] = {}
    for r in batched:
        if (r.get("metric"), r.get("impl"), r.get("model"), r.get("kv_heads"), r.get("context")) != (
                metric, impl, model, kv, context):
            continue
        if impl == "minids" and kernels is not None and r.get("decode_attention") not in kernels:
            continue
        out[r["batch"]] = max(out.get(r["batch"], 0.0), r["value"])
    return dict(sorted(out.items()))


def miniature_figure(record: dict, ngram: dict, outside: dict | None = None):
    """Left: training and held-out loss (nats/token) against tokens seen. Middle: held-out bits per byte against
    tokens seen, with the byte 4-gram and the best byte n-gram as lines in the legend. Right (if `outside`, the
    record of minids.experiments.outside_corpus): bits per byte of the kept weights and of the byte n-gram on the
    corpus' held-out files and on packages outside the corpus."""
    import matplotlib.pyplot as plt

    panels = 3 if outside else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8))
    per_step = record["batch_tokens"] / 1e6
    left, middle = axes[0], axes[1]
    left.plot([s * per_step for s in record["curve"]["steps"]], record["curve"]["loss"], label="training batches")
    left.plot([e["step"] * per_step for e in record["evals"]], [e["val_loss"] for e in record["evals"]], "o-", ms=3,
              label="held-out files")
    left.set(xlabel="tokens seen (millions)", ylabel="loss (nats per token)", title="training the miniature")
    left.legend(fontsize=9)
    middle.plot([e["step"] * per_step for e in record["evals"]], [e["val_bpb"] for e in record["evals"]], "o-", ms=3,
                color="tab:orange", label="the miniature")
    orders = {o["order"]: o for o in ngram["orders"]}
    for order, style in ((4, ":"), (ngram["best"]["order"], "--")):
        middle.axhline(orders[order]["val_bpb"], color="gray", ls=style, lw=1.2,
                       label=f"byte {order}-gram ({orders[order]['val_bpb']:.2f})")
    middle.set(xlabel="tokens seen (millions)", ylabel="bits per byte (held-out files)", ylim=(0, 2.6),
               title="held-out bits per byte")
    middle.legend(fontsize=9, loc="lower left")
    if outside:
        right = axes[2]
        order = outside["ngram_order"]
        best_ngram = orders[order]["val_bpb"]
        groups = {"held-out files\nof the corpus": (record["best_bf16"]["val_bpb"], best_ngram),
                  "packages outside\nthe corpus": (outside["all"]["model_bpb"], outside["all"]["ngram_bpb"])}
        for i, (what, color) in enumerate((("the miniature", "tab:orange"), (f"byte {order}-gram", "gray"))):
            xs = [j + 0.38 * (i - 0.5) for j in range(len(groups))]
            values = [v[i] for v in groups.values()]
            right.bar(xs, values, width=0.36, color=color, label=what)
            for x, v in zip(xs, values):
                right.text(x, v + 0.04, f"{v:.2f}", ha="center", fontsize=9)
        right.set_xticks(range(len(groups)), list(groups), fontsize=9)
        right.set(ylabel="bits per byte", ylim=(0, 1.25 * max(max(v) for v in groups.values())),
                  title="where a user will run it")
        right.legend(fontsize=9, loc="upper left")
    fig.tight_layout()
    return fig


def batched_decode_figure(batched: list[dict], bandwidth: float = 4.3e12, kernels: tuple | None = KERNELS):
    """Left: measured decode tokens/s against batch for the 7B with 32, 8 and 4 KV heads at 2K and 4K context (per
    point the best of `kernels`, see best_decode), and transformers' best path. Right: the same shapes' bandwidth
    floor, B / ((weights + B x cache) / bandwidth), the most any kernel could reach."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for kv, color in ((32, "tab:red"), (8, "tab:green"), (4, "tab:blue")):
        for context, style in ((2048, "o-"), (4096, "s--")):
            label = f"{kv} KV heads, T={context // 1024}K"
            tok = best_decode(batched, kv, context, kernels=kernels)
            left.plot(list(tok), list(tok.values()), style, color=color, ms=4, label=label)
            floor = {r["batch"]: r["floor_ms"] for r in batched if r.get("metric") == "decode_tok_s"
                     and r.get("impl") == "minids" and r.get("model") == "deepseek-llm-7b"
                     and r.get("kv_heads") == kv and r.get("context") == context}
            floor = dict(sorted(floor.items()))
            right.plot(list(floor), [1000 * b / f for b, f in floor.items()], style, color=color, ms=3, label=label)
    hf = best_decode(batched, 32, 2048, impl="transformers")
    left.plot(list(hf), list(hf.values()), "x:", color="black", label="transformers (best path), 32 KV, 2K")
    cards = sorted({r["device"] for r in batched if r.get("metric") == "decode_tok_s" and r.get("device")})
    left.set(xscale="log", yscale="log", xlabel="batch B (sequences)", ylabel="decode tokens/s (all sequences)",
             title=f"measured on one {' / '.join(c.replace('NVIDIA ', '') for c in cards) or 'GPU'} (7B shapes, bf16)")
    right.set(xscale="log", xlabel="batch B (sequences)",
              title=f"the floor: B / ((weights + B × cache) / {bandwidth / 1e12:.1f} TB/s)")
    right.yaxis.set_tick_params(labelleft=True)
    right.set_ylabel("tokens/s at the bandwidth floor")
    left.legend(fontsize=8, loc="upper left")
    right.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig
