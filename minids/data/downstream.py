"""Downstream tasks for fine-tuning a model pre-trained on the project's Python corpus (chapter 13).

Two tasks that pre-training never posed, both in the pre-trained model's own vocabulary (data/tokenizer):

    HopInVocab      hop_k (data/hop.py), a compositional task: the same sequences, each id written as a
                    token the model knows (hop counts as the digits "0".."9", the characters as "a", "b",
                    "c", "d", "no answer" as "~", the blank as "_"), so LoRA, which cannot retrain the
                    embedding, reads inputs the embedding already separates. Scored per k; the task's
                    `metric` is the mean accuracy over k = 1..max_hops (k = 0 is copying the current
                    character). `chance` is 1/3: a uniform guess scores 1/4, and 1/3 is what a model gets on
                    k = 1 without looking back at all (one hop never lands on the current character), so
                    1/3 bounds what needs no composition from above
    FunctionNames   name a Python function: its source with the name masked, then "# name:", and the model
                    writes the name and a new line. Every occurrence of the name (recursion, docstring) is
                    replaced by "___". Scored by exact match: every answer token is the argmax given the
                    ones before it, which is exactly when greedy decoding writes the name (one forward pass
                    scores a batch). Fine-tuning examples come from the corpus's train split; the scored
                    ones from its validation split, files that pre-training never saw

Both give `batches(batch_size, seed, device)` (a get_batch for train.train), `eval_set(...)` and
`evaluate(model, eval_set) -> {"loss", "value", ...}`, with `metric` naming the value.
"""

from __future__ import annotations

import re
import textwrap
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .hop import HopKTask

IGNORE = -100  # targets the loss skips (train.lm_loss)


# ---- hop_k in the vocabulary -------------------------------------------------------------------------
class HopInVocab:
    """hop_k with every id mapped to a token of `tokenizer`: see the module docstring."""

    metric = "accuracy"

    def __init__(self, tokenizer, n: int = 64, max_hops: int = 4) -> None:
        if max_hops > 9:
            raise ValueError(f"HopInVocab: max_hops ({max_hops}) must be <= 9, so that each hop count is one digit "
                             "token (the tokenizer splits numbers into digits)")
        self.task = HopKTask(n=n, max_hops=max_hops)
        words = [str(k) for k in range(max_hops + 1)] + ["a", "b", "c", "d"][:self.task.alphabet] + ["~", "_"]
        ids = []
        for w in words:
            enc = tokenizer.encode(w)
            if len(enc) != 1:
                raise ValueError(f"HopInVocab: {w!r} is not one token of this tokenizer ({enc})")
            ids.append(enc[0])
        if len(set(ids)) != len(ids):
            raise ValueError(f"HopInVocab: the task's tokens are not distinct: {dict(zip(words, ids))}")
        self.words = words
        self.to_vocab = torch.tensor(ids, dtype=torch.long)  # hop-task id -> model vocabulary id
        self.chance = 1 / (self.task.alphabet - 1)  # see the module docstring

    @property
    def n(self) -> int:
        return self.task.n

    def _map(self, *tensors):
        lut = self.to_vocab.to(tensors[0].device)
        return tuple(lut[t] for t in tensors)

    def batches(self, batch_size: int, seed: int, device="cpu"):
        """Fresh sequences every step, a pure function of (seed, step), as HopKTask.batches."""
        raw = self.task.batches(batch_size, seed, device)

        def get_batch(step: int, generator=None):
            return self._map(*raw(step, generator))

        return get_batch

    def eval_set(self, per_k: int, seed: int = 10_000, device="cpu"):
        inputs, targets, hops = self.task.eval_set(per_k, seed=seed, device=device)
        return (*self._map(inputs, targets), hops)

    @torch.no_grad()
    def evaluate(self, model, eval_set, batch_size: int = 256) -> dict:
        """{"loss": mean cross-entropy over every position, "accuracy_by_k": {k: accuracy on the positions
        whose target is a character}, "value": mean accuracy over k = 1..max_hops}."""
        inputs, targets, hops = eval_set
        first = self.to_vocab[self.task.first_char:self.task.no_answer].to(targets.device)
        K = self.task.max_hops
        correct = torch.zeros(K + 1, dtype=torch.float64)
        count = torch.zeros(K + 1, dtype=torch.float64)
        loss_sum, n_positions = 0.0, 0
        for i in range(0, len(inputs), batch_size):
            x, y, h = inputs[i:i + batch_size], targets[i:i + batch_size], hops[i:i + batch_size]
            logits = model(x).float()
            loss_sum += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
            n_positions += y.numel()
            real = torch.isin(y, first)
            hit = (logits.argmax(-1) == y) & real
            k = h[:, None].expand_as(y)
            correct += torch.bincount(k[real].cpu(), weights=hit[real].double().cpu(), minlength=K + 1)
            count += torch.bincount(k[real].cpu(), minlength=K + 1).double()
        by_k = {k: (correct[k] / count[k]).item() if count[k] > 0 else float("nan") for k in range(K + 1)}
        return {"loss": loss_sum / n_positions, "accuracy_by_k": by_k,
                "value": sum(by_k[k] for k in range(1, K + 1)) / K if K else by_k[0]}


# ---- naming a function ---------------------------------------------------------------------------------
DEF = re.compile(r"^([ \t]*)def ([A-Za-z_][A-Za-z0-9_]*)[ \t]*\(", re.M)
MASK = "___"
CUE = "\n# name:"


@dataclass(frozen=True)
class Function:
    name: str
    source: str  # dedented, from its def line to the end of its body, name masked


def find_functions(text: str) -> list[Function]:
    """Every `def` in the text with its body: the lines after it that are blank or indented deeper. Dunder
    methods (__init__, __repr__, ...) are left out: their names follow from the class protocol, not from
    what the body does; so are bodies of one line or less (stubs, overloads), which give nothing to read."""
    lines = text.split("\n")
    starts = {}
    offset = 0
    line_at = []  # character offset of each line
    for line in lines:
        line_at.append(offset)
        offset += len(line) + 1
    for m in DEF.finditer(text):
        starts[m.start()] = (len(m.group(1).expandtabs()), m.group(2))
    out = []
    index = {pos: i for i, pos in enumerate(line_at)}
    for pos, (indent, name) in starts.items():
        if name.startswith("__") and name.endswith("__"):
            continue
        first = index[pos]
        last = first
        for j in range(first + 1, len(lines)):
            line = lines[j]
            if not line.strip():
                continue
            if len(line) - len(line.lstrip()) <= indent and not line.lstrip().startswith((")", "]", "}")):
                break
            last = j
        body = [ln for ln in lines[first + 1:last + 1] if ln.strip()]
        if len(body) < 1 or (len(body) == 1 and body[0].strip() in ("...", "pass")):
            continue
        source = textwrap.dedent("\n".join(lines[first:last + 1])).rstrip()
        out.append(Function(name, re.sub(rf"\b{re.escape(name)}\b", MASK, source)))
    return out


class FunctionNames:
    """Name a function from its masked source: see the module docstring. `seq_len` tokens per example: long
    functions keep their beginning (the def line and docstring first), then the cue and the answer."""

    metric = "exact_match"

    def __init__(self, tokenizer, train_text: str, eval_text: str, seq_len: int = 256,
                 max_train: int | None = 20_000, max_eval: int | None = 1024) -> None:
        self.seq_len = seq_len
        self.tokenizer = tokenizer
        train_fns = _unique(find_functions(train_text))
        eval_fns = _unique(find_functions(eval_text))
        if max_train is not None:
            train_fns = _spread(train_fns, max_train)
        if max_eval is not None:
            eval_fns = _spread(eval_fns, max_eval)
        if not train_fns or not eval_fns:
            raise ValueError(f"FunctionNames: found {len(train_fns)} training and {len(eval_fns)} scored functions; "
                             "the texts need Python functions with bodies")
        self.train = self.encode(train_fns)
        self.eval = self.encode(eval_fns)
        self.train_names = [f.name for f in train_fns]
        self.eval_names = [f.name for f in eval_fns]

    @property
    def majority_name(self) -> str:
        return Counter(self.train_names).most_common(1)[0][0]

    @property
    def chance(self) -> float:
        """The trivial baseline: the share of scored functions named like the most frequent training name."""
        return sum(n == self.majority_name for n in self.eval_names) / len(self.eval_names)

    def state(self) -> dict:
        """What a worker process needs (tensors and names, no tokenizer): FunctionNames.from_state reads it."""
        return {"seq_len": self.seq_len, "train": self.train, "eval": self.eval, "train_names": self.train_names,
                "eval_names": self.eval_names}

    @classmethod
    def from_state(cls, state: dict, tokenizer=None) -> "FunctionNames":
        task = cls.__new__(cls)
        task.tokenizer = tokenizer
        for key in ("seq_len", "train", "eval", "train_names", "eval_names"):
            setattr(task, key, state[key])
        return task

    def encode(self, functions: list[Function]) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (n, seq_len) int16 (8,064 ids fit): targets are IGNORE but on the answer."""
        tok = self.tokenizer
        sources = tok.backend.encode_batch([f.source for f in functions], add_special_tokens=False)
        answers = tok.backend.encode_batch([" " + f.name for f in functions], add_special_tokens=False)
        cue, newline, pad = tok.encode(CUE), tok.encode("\n"), tok.eos_id
        xs, ys = [], []
        for f, src, ans in zip(functions, sources, answers):
            answer = ans.ids + newline
            room = self.seq_len + 1 - len(cue) - len(answer)
            if room < 16:
                raise ValueError(f"FunctionNames: seq_len {self.seq_len} leaves no room for the source of {f.name}")
            row = src.ids[:room] + cue + answer
            fill = self.seq_len + 1 - len(row)
            xs.append(row[:-1] + [pad] * fill)
            ys.append([IGNORE] * (len(row) - 1 - len(answer)) + answer + [IGNORE] * fill)  # only the answer is scored
        return torch.tensor(xs, dtype=torch.int16), torch.tensor(ys, dtype=torch.int16)

    def describe(self, i: int, split: str = "eval") -> str:
        """One example as the model reads it, with its answer."""
        inputs, targets = self.eval if split == "eval" else self.train
        x = inputs[i].long()
        keep = targets[i].long() != IGNORE
        prompt_len = int(keep.nonzero()[0]) + 1
        return self.tokenizer.decode(x[:prompt_len].tolist()) + " -> " + \
            repr(self.tokenizer.decode(targets[i].long()[keep].tolist()))

    def batches(self, batch_size: int, seed: int, device="cpu"):
        """Random training examples (with replacement), a pure function of (seed, step)."""
        inputs, targets = (t.to(device) for t in self.train)
        generator = torch.Generator().manual_seed(seed)

        def get_batch(step: int, _generator=None):
            generator.manual_seed(seed * 1_000_003 + step)
            rows = torch.randint(0, len(inputs), (batch_size,), generator=generator).to(inputs.device)
            return inputs[rows].long(), targets[rows].long()

        return get_batch

    def eval_set(self, limit: int | None = None, device="cpu"):
        inputs, targets = self.eval
        if limit is not None:
            inputs, targets = inputs[:limit], targets[:limit]
        return inputs.to(device), targets.to(device)

    @torch.no_grad()
    def evaluate(self, model, eval_set, batch_size: int = 128) -> dict:
        """{"loss": mean cross-entropy per answer token, "value": exact-match rate}."""
        inputs, targets = eval_set
        hits, n, loss_sum, n_tokens = 0, 0, 0.0, 0
        for i in range(0, len(inputs), batch_size):
            x, y = inputs[i:i + batch_size].long(), targets[i:i + batch_size].long()
            logits = model(x).float()
            scored = y != IGNORE
            loss_sum += F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum").item()
            n_tokens += int(scored.sum())
            right = (logits.argmax(-1) == y) | ~scored
            hits += int(right.all(dim=1).sum())
            n += len(x)
        return {"loss": loss_sum / n_tokens, "value": hits / n}


def _unique(functions: list[Function]) -> list[Function]:
    seen, out = set(), []
    for f in functions:
        if f.source not in seen:
            seen.add(f.source)
            out.append(f)
    return out


def _spread(items: list, limit: int) -> list:
    """At most `limit` items taken evenly through the list (every file contributes, not only the first ones)."""
    if len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]
