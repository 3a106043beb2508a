"""A synthetic task whose composition depth we control: variable-binding chains, k = 1..6 hops.

Every example holds one chain of each length k = 1..max_hops, written as assignments in shuffled order,
followed by ONE query, for the last variable of a chain drawn at random (so k is uniform over 1..max_hops):

    k = 1:  q=7
    k = 3:  c=4  w=c  m=w            (m -> w -> c -> 4: three look-ups)
    text:   w=c;q=7;m=w;c=4;...;?m=4

Answering "?m=" needs k dependent look-ups (find m's statement, read w, find w's statement, read c, ...):
each needs the result of the one before, which is what depth is for (a transformer layer can do a bounded
number of look-ups in sequence; Sanford, Hsu and Telgarsky 2024 show k-hop needs depth that grows like
log k, docs/references.md#hop-k). The variables are distinct random letters, so nothing but the look-ups can give the
answer; the digits are random, so guessing one of the digits in the context is right about 1/4 of the time
(`context_digit_baseline` computes the exact number for an evaluation set).

Why one query and not one per chain: with every chain queried, the answers already given are visible to the
later queries, and a model can answer the last ones by elimination ("the digit not used yet") with no
look-up at all, equally well at every k. A CPU check (max_hops 4, all chains queried) reached 0.49 against
a 0.33 baseline with acc_k4 >= acc_k1: elimination, not hops. One query closes that shortcut.

The text is plain ASCII, so the ByteTokenizer (vocab 256) reads it and the same model shape serves this task
and the language corpus. Only the answer digits are scored: every other target is -100.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .tokenizer import ByteTokenizer

LETTERS = "abcdefghijklmnopqrstuvwxyz"
IGNORE = -100


@dataclass(frozen=True)
class KHopTask:
    max_hops: int = 6

    def __post_init__(self) -> None:
        if not isinstance(self.max_hops, int) or not 1 <= self.max_hops:
            raise ValueError(f"KHopTask.max_hops must be a positive int, got {self.max_hops!r}")
        if self.n_variables > len(LETTERS):
            raise ValueError(
                f"KHopTask.max_hops={self.max_hops} needs {self.n_variables} distinct variables, "
                f"but there are only {len(LETTERS)} letters (max_hops <= 6)"
            )

    @property
    def n_variables(self) -> int:  # chains of length 1..K use 1 + 2 + ... + K variables
        return self.max_hops * (self.max_hops + 1) // 2

    @property
    def seq_len(self) -> int:
        """Model input length: 4 bytes per statement and for the query, minus the last (predicted) byte."""
        return 4 * (self.n_variables + 1) - 1

    def _layout(self):
        # For statement j: which variable slot is assigned, from which slot (-1: a digit), in which chain.
        lhs, rhs, chain = [], [], []
        slot = 0
        for k in range(1, self.max_hops + 1):
            for j in range(k):
                lhs.append(slot + j)
                rhs.append(slot + j - 1 if j > 0 else -1)
                chain.append(k - 1)
            slot += k
        last = [sum(range(1, k + 1)) - 1 for k in range(1, self.max_hops + 1)]  # the queried slot per chain
        return torch.tensor(lhs), torch.tensor(rhs), torch.tensor(chain), torch.tensor(last)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs, targets, hops), each (batch_size, seq_len); hops is k at the answer target, 0 elsewhere."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        b, K, S = batch_size, self.max_hops, self.n_variables
        lhs, rhs, chain, last = self._layout()
        letters = torch.rand(b, len(LETTERS), generator=generator).argsort(dim=1)[:, :S] + ord("a")  # (b, S)
        digits = torch.randint(0, 10, (b, K), generator=generator) + ord("0")  # (b, K): each chain's value
        statement_order = torch.rand(b, S, generator=generator).argsort(dim=1)
        asked = torch.randint(0, K, (b,), generator=generator)  # which chain the one query asks: k = asked + 1

        value = torch.where(rhs >= 0, letters[:, rhs.clamp(min=0)], digits[:, chain])  # (b, S)
        statements = torch.stack(
            [letters[:, lhs], torch.full_like(value, ord("=")), value, torch.full_like(value, ord(";"))], dim=-1
        )  # (b, S, 4): "x=y;"
        statements = statements.gather(1, statement_order[:, :, None].expand(b, S, 4))
        rows = torch.arange(b)
        query = torch.stack(
            [torch.full_like(asked, ord("?")), letters[rows, last[asked]], torch.full_like(asked, ord("=")),
             digits[rows, asked]], dim=-1
        )  # (b, 4): "?x=D"
        text = torch.cat([statements.flatten(1), query], dim=1)  # (b, 4 S + 4)

        inputs, targets = text[:, :-1], text[:, 1:].clone()
        hops = torch.zeros_like(targets)
        hops[:, -1] = asked + 1  # the last target is the answer digit
        targets[hops == 0] = IGNORE
        return inputs, targets, hops

    def batches(self, batch_size: int):
        """A get_batch(step, generator) for train()."""

        def get_batch(step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            inputs, targets, _ = self.sample(batch_size, generator)
            return inputs, targets

        return get_batch

    def eval_set(self, n: int, seed: int = 1234) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A fixed evaluation set (its own seed, so it never depends on the training stream)."""
        return self.sample(n, torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def accuracy(self, model, eval_set, batch_size: int = 256) -> dict[str, float]:
        """Exact-match accuracy of the argmax digit per hop count: {"loss", "acc_k1", ..., "acc_k6", "acc"}."""
        inputs, targets, hops = eval_set
        device = next(model.parameters()).device
        correct = torch.zeros(self.max_hops + 1)
        count = torch.zeros(self.max_hops + 1)
        loss_sum, n_answers = 0.0, 0
        for i in range(0, inputs.shape[0], batch_size):
            x = inputs[i : i + batch_size].to(device)
            y, h = targets[i : i + batch_size].to(device), hops[i : i + batch_size].to(device)
            logits = model(x).float()
            mask = h > 0
            picked, answer, k = logits[mask], y[mask], h[mask]
            loss_sum += torch.nn.functional.cross_entropy(picked, answer, reduction="sum").item()
            n_answers += answer.numel()
            hit = (picked.argmax(-1) == answer).float()
            correct += torch.zeros_like(correct).index_add_(0, k.cpu(), hit.cpu())
            count += torch.bincount(k.cpu(), minlength=self.max_hops + 1).float()
        result = {"loss": loss_sum / n_answers}
        for k in range(1, self.max_hops + 1):
            result[f"acc_k{k}"] = (correct[k] / count[k]).item()
        result["acc"] = (correct[1:].sum() / count[1:].sum()).item()
        return result

    def context_digit_baseline(self, eval_set) -> float:
        """Accuracy of guessing one of the chains' digits at random: the floor a model reaches by learning only
        'the answer is a digit from the context'."""
        inputs, targets, hops = eval_set
        statements = inputs[:, : 4 * self.n_variables]
        chain_digits = statements[(statements >= ord("0")) & (statements <= ord("9"))].view(inputs.shape[0], -1)
        answer = targets[hops > 0]  # one per example
        return (chain_digits == answer[:, None]).float().mean().item()

    def describe(self, inputs: torch.Tensor, targets: torch.Tensor, hops: torch.Tensor, row: int = 0) -> str:
        """One example as text, with each query's hop count."""
        tok = ByteTokenizer()
        text = tok.decode(torch.cat([inputs[row], targets[row, -1:]]))
        n_statements = 4 * self.n_variables
        answers = ", ".join(
            f"?{tok.decode([int(inputs[row, i - 1])])} -> {tok.decode([int(targets[row, i])])} (k={int(hops[row, i])})"
            for i in torch.nonzero(hops[row]).flatten().tolist()
        )
        return f"{text[:n_statements]}\n{text[n_statements:]}\n{answers}"
