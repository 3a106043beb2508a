"""hop_k: the k-hop induction-heads task of Sanford, Hsu and Telgarsky 2024 (arXiv 2402.09268).

A random string over an alphabet of 4 characters, no character equal to its predecessor:

    x = c a b d a c b a d ...

One hop from position p: find q, the LAST position before p holding the same character as p, and move to
q + 1 (just after that earlier occurrence). That is exactly what an induction head does ("what came after
this character last time?"). hop_k applies the hop k times and reads the character where it lands:

    hop_0(p) = x[p]      hop_1(p) = x[q+1]      hop_2(p) = x[q'+1] where q' is the last q' < q+1 with x[q'] = x[q+1]

If a hop finds no earlier occurrence the answer is the "no answer" token. Each sequence draws k from
0..max_hops (16), and the model is told k by a hop-count token in the first position:

    inputs   [k]  x0  x1  x2 ... x_{N-2}
    targets  [_]  h0  h1  h2 ... h_{N-2}        h_p = hop_k(p) of the characters, "_" = blank

The target at every position depends only on the positions up to it, so a causal model can predict it; the
loss is on every position, and accuracy is scored per k on the positions whose target is a real character.
Why it measures depth: hop_k composes k look-ups, each needing the previous one's result. Sanford et al.
prove that a transformer of depth about log2(k) + 2 solves it (each layer can double the hops done so far,
by "pointer doubling") and that depth below order log k cannot, whatever the width (docs/references.md#hop-k);
chapter 06's lab (notebooks/labs/06_depth_vs_width_lab.ipynb) puts minids' parameter-matched numbers beside
their table.

Token ids follow the paper's code (its `InductionHopsFullSequenceTask`): hop-count tokens 0..max_hops, then
the characters, then "no answer", then the blank.

Generation is vectorised over the batch on any device (the previous occurrence of every character comes
from one cummax per character; each hop is one gather), and deterministic: the training stream is a pure
function of (seed, step), the evaluation sets come from their own seed. `hop_reference` is a plain-Python
version, written like the paper's string code, that the tests check the tensors against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class HopKTask:
    n: int = 128  # model positions per sequence: the hop-count token + n - 1 characters
    alphabet: int = 4
    max_hops: int = 16

    def __post_init__(self) -> None:
        for name, low in (("n", 3), ("alphabet", 2), ("max_hops", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ValueError(f"HopKTask.{name} must be an int >= {low}, got {value!r}")

    # ---- the vocabulary -----------------------------------------------------------------------------
    def hop_token(self, k: int) -> int:
        return k

    @property
    def first_char(self) -> int:
        return self.max_hops + 1

    @property
    def no_answer(self) -> int:
        return self.first_char + self.alphabet

    @property
    def blank(self) -> int:
        return self.no_answer + 1

    @property
    def vocab_size(self) -> int:
        return self.blank + 1

    def describe(self, inputs: torch.Tensor, targets: torch.Tensor, row: int = 0) -> str:
        """One sequence as two aligned lines of text (letters a, b, c, ..., ~ = no answer, _ = blank)."""

        def char(t: int) -> str:
            if t < self.first_char:
                return f"[{t}]"
            if t < self.no_answer:
                return chr(ord("a") + t - self.first_char)
            return "~" if t == self.no_answer else "_"

        x, y = inputs[row].tolist(), targets[row].tolist()
        return ("input  " + " ".join(f"{char(t):>3s}" for t in x) + "\n"
                + "target " + " ".join(f"{char(t):>3s}" for t in y))

    # ---- generation ---------------------------------------------------------------------------------
    def random_strings(self, batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """(batch, length) characters in 0..alphabet-1, each different from its predecessor (uniform over
        the alphabet - 1 others): a running sum of steps 1..alphabet-1, mod alphabet."""
        device = generator.device
        first = torch.randint(0, self.alphabet, (batch, 1), generator=generator, device=device)
        steps = torch.randint(1, self.alphabet, (batch, length - 1), generator=generator, device=device)
        return torch.cat([first, steps], dim=1).cumsum(dim=1) % self.alphabet

    def jump(self, x: torch.Tensor) -> torch.Tensor:
        """One hop for every position of x (b, m): q + 1 for the last q < p with x[q] = x[p], or -1."""
        b, m = x.shape
        pos = torch.arange(m, device=x.device).expand(b, m)
        prev = torch.full_like(x, -1)
        for c in range(self.alphabet):
            last_at_or_before = torch.where(x == c, pos, -1).cummax(dim=1).values  # last c in 0..p
            last_before = torch.cat([torch.full_like(x[:, :1], -1), last_at_or_before[:, :-1]], dim=1)
            prev = torch.where(x == c, last_before, prev)
        return torch.where(prev >= 0, prev + 1, -1)

    def hop_answers(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """hop_k of every position of x (b, m) for a per-row k (b,): character ids 0..alphabet-1, or -1."""
        jump = self.jump(x)
        where = torch.arange(x.shape[1], device=x.device).expand_as(x).clone()  # hop_0: the position itself
        for step in range(int(k.max()) if k.numel() else 0):
            hopped = torch.where(where >= 0, jump.gather(1, where.clamp(min=0)), -1)
            where = torch.where((step < k)[:, None], hopped, where)
        return torch.where(where >= 0, x.gather(1, where.clamp(min=0)), -1)

    def sample(self, batch: int, generator: torch.Generator, k: int | torch.Tensor | None = None):
        """(inputs, targets, hops): token ids (batch, n) each, and the k of each row (batch,).

        k None: drawn per row from 0..max_hops; an int: every row has that k."""
        if not isinstance(batch, int) or batch <= 0:
            raise ValueError(f"batch must be a positive int, got {batch!r}")
        device = generator.device
        x = self.random_strings(batch, self.n - 1, generator)
        if k is None:
            hops = torch.randint(0, self.max_hops + 1, (batch,), generator=generator, device=device)
        else:
            if not 0 <= int(k) <= self.max_hops:
                raise ValueError(f"k must lie in 0..{self.max_hops}, got {k}")
            hops = torch.full((batch,), int(k), device=device, dtype=torch.long)
        answers = self.hop_answers(x, hops)
        inputs = torch.cat([hops[:, None], x + self.first_char], dim=1)
        real = torch.where(answers >= 0, answers + self.first_char, self.no_answer)
        targets = torch.cat([torch.full_like(hops[:, None], self.blank), real], dim=1)
        return inputs, targets, hops

    def batches(self, batch_size: int, seed: int, device="cpu"):
        """A get_batch(step, generator) for train(): fresh sequences every step, made on `device`, the same
        for a given (seed, step) whatever ran before (train()'s own generator is not used)."""
        generator = torch.Generator(device=device)

        def get_batch(step: int, _generator: torch.Generator | None = None):
            generator.manual_seed(seed * 1_000_003 + step)
            inputs, targets, _ = self.sample(batch_size, generator)
            return inputs, targets

        return get_batch

    def eval_set(self, per_k: int, seed: int = 10_000, device="cpu"):
        """per_k held-out sequences for each k = 0..max_hops (from their own seed): (inputs, targets, hops)."""
        generator = torch.Generator(device=device).manual_seed(seed)
        parts = [self.sample(per_k, generator, k=k) for k in range(self.max_hops + 1)]
        return tuple(torch.cat(p) for p in zip(*parts))

    # ---- scoring ------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, eval_set, batch_size: int = 512) -> dict:
        """{"loss": mean cross-entropy over every position, "accuracy_by_k": {k: accuracy on the positions
        whose target is a real character}}."""
        inputs, targets, hops = eval_set
        device = next(model.parameters()).device
        correct = torch.zeros(self.max_hops + 1, dtype=torch.float64)
        count = torch.zeros(self.max_hops + 1, dtype=torch.float64)
        loss_sum, n_positions = 0.0, 0
        for i in range(0, inputs.shape[0], batch_size):
            x, y = inputs[i:i + batch_size].to(device), targets[i:i + batch_size].to(device)
            h = hops[i:i + batch_size].to(device)
            logits = model(x).float()
            loss_sum += torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
            n_positions += y.numel()
            real = (y >= self.first_char) & (y < self.no_answer)
            hit = (logits.argmax(-1) == y) & real
            k = h[:, None].expand_as(y)
            correct += torch.zeros_like(correct).index_add_(0, k[real].cpu(), hit[real].double().cpu())
            count += torch.bincount(k[real].cpu(), minlength=self.max_hops + 1).double()
        accuracy = {k: (correct[k] / count[k]).item() if count[k] > 0 else float("nan")
                    for k in range(self.max_hops + 1)}
        return {"loss": loss_sum / n_positions, "accuracy_by_k": accuracy}


def hop_reference(chars: list[int], k: int) -> list[int]:
    """hop_k of every position of one string, by the definition, in plain Python (-1: no answer).
    Written like the paper's code: rfind of the current character in the prefix before the current
    position, then step one past it."""
    answers = []
    for p in range(len(chars)):
        at = p
        for _ in range(k):
            prefix = chars[:at]
            if chars[at] not in prefix:
                at = -1
                break
            at = len(prefix) - 1 - prefix[::-1].index(chars[at]) + 1
        answers.append(chars[at] if at >= 0 else -1)
    return answers


def depth_needed(k: int) -> float:
    """The construction's depth for hop_k: about log2(k) + 2 layers (Sanford et al. 2024), for k >= 1."""
    return math.log2(k) + 2 if k >= 1 else 1.0
