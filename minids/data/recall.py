"""recall_d: name a value seen d positions ago, for every d at once (the practical reach of a window stack).

A sequence of random filler symbols holds ONE value token, drawn from its own alphabet, at a random early
position v. Every later position must name that value:

    inputs   f f f f [V7] f f f f f f f f f f ...       f = random filler, [V7] = value 7 of n_values
    targets  _ _ _ _  _   V7 V7 V7 V7 V7 ...  V7        _ = not scored (-100)
    distance          0   1  2  3  ...                   d = position - v

The target at distance d depends on the input d positions back and on nothing else, so accuracy against d
measures how far the trained model actually carries information. A stack of L windowed layers (window W)
can carry it at most L (W - 1) positions (receptive_field.py): beyond that the logits do not depend on the
value at all, and the best any model can do is guess, right 1 / n_values of the time (chance). Inside the
reach, one layer already suffices up to d = W - 1 (attend to the one value token in view and copy it);
further out, each layer has to pass the value on by up to W - 1 positions, a relay it must learn.

The value position v is drawn from 0 .. n - 1 - max_distance, so every d up to max_distance is scored in
every sequence. Generation is vectorised and deterministic: the training stream is a pure function of
(seed, step), the evaluation set has its own seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RecallTask:
    n: int = 96  # positions per sequence
    max_distance: int = 80  # every d = 1 .. max_distance is scored in every sequence
    n_fillers: int = 16
    n_values: int = 16

    def __post_init__(self) -> None:
        for name, low in (("n", 2), ("max_distance", 1), ("n_fillers", 1), ("n_values", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"RecallTask.{name} must be an int >= {low}, got {value!r}")
        if self.max_distance > self.n - 1:
            raise ValueError(f"RecallTask: max_distance ({self.max_distance}) must be <= n - 1 ({self.n - 1})")

    @property
    def vocab_size(self) -> int:
        return self.n_fillers + self.n_values  # fillers 0 .. n_fillers - 1, then the values

    @property
    def chance(self) -> float:
        """Accuracy of the best guess when the value is out of reach: uniform over the values."""
        return 1.0 / self.n_values

    def sample(self, batch: int, generator: torch.Generator):
        """(inputs, targets, value_pos): token ids (batch, n) each, and each row's value position (batch,)."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0:
            raise ValueError(f"batch must be a positive int, got {batch!r}")
        device = generator.device
        inputs = torch.randint(0, self.n_fillers, (batch, self.n), generator=generator, device=device)
        value = torch.randint(self.n_fillers, self.vocab_size, (batch, 1), generator=generator, device=device)
        value_pos = torch.randint(0, self.n - self.max_distance, (batch, 1), generator=generator, device=device)
        positions = torch.arange(self.n, device=device)[None, :]
        inputs = torch.where(positions == value_pos, value, inputs)
        targets = torch.where(positions > value_pos, value, torch.full_like(inputs, -100))
        return inputs, targets, value_pos[:, 0]

    def batches(self, batch_size: int, seed: int, device="cpu"):
        """A get_batch(step, generator) for train(): fresh sequences every step, the same for a given
        (seed, step) whatever ran before (train()'s own generator is not used)."""
        generator = torch.Generator(device=device)

        def get_batch(step: int, _generator: torch.Generator | None = None):
            generator.manual_seed(seed * 1_000_003 + step)
            inputs, targets, _ = self.sample(batch_size, generator)
            return inputs, targets

        return get_batch

    def eval_set(self, size: int, seed: int = 10_000, device="cpu"):
        generator = torch.Generator(device=device).manual_seed(seed)
        return self.sample(size, generator)

    @torch.no_grad()
    def evaluate(self, model, eval_set, batch_size: int = 512) -> dict:
        """{"loss": mean cross-entropy over the scored positions, "accuracy_by_d": {d: accuracy} for
        d = 1 .. max_distance}. Accuracy is the argmax over the whole vocabulary naming the value."""
        inputs, targets, value_pos = eval_set
        device = next(model.parameters()).device
        correct = torch.zeros(self.max_distance + 1, dtype=torch.float64)
        count = torch.zeros(self.max_distance + 1, dtype=torch.float64)
        loss_sum, n_scored = 0.0, 0
        for i in range(0, inputs.shape[0], batch_size):
            x, y = inputs[i:i + batch_size].to(device), targets[i:i + batch_size].to(device)
            logits = model(x).float()
            loss_sum += torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100,
                                                          reduction="sum").item()
            n_scored += int((y != -100).sum())
            d = torch.arange(self.n, device=device)[None, :] - value_pos[i:i + batch_size, None].to(device)
            scored = (d >= 1) & (d <= self.max_distance)
            hit = (logits.argmax(-1) == y) & scored
            correct += torch.zeros_like(correct).index_add_(0, d[scored].cpu(), hit[scored].double().cpu())
            count += torch.bincount(d[scored].cpu(), minlength=self.max_distance + 1).double()
        return {"loss": loss_sum / max(n_scored, 1),
                "accuracy_by_d": {d: (correct[d] / count[d]).item() for d in range(1, self.max_distance + 1)}}
