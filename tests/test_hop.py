"""hop_k (Sanford, Hsu and Telgarsky 2024): the vectorised labels against a plain-Python reference."""

import random

import pytest
import torch

from minids.data import HopKTask, hop_reference


def test_reference_on_a_hand_worked_string():
    #        a  b  a  c  b  a
    chars = [0, 1, 0, 2, 1, 0]
    assert hop_reference(chars, 0) == chars
    # hop_1: position 2 (a) -> last earlier a is 0 -> answer x[1] = b; 4 (b) -> b at 1 -> x[2] = a;
    # 5 (a) -> the LAST earlier a is 2, not 0 -> x[3] = c
    assert hop_reference(chars, 1) == [-1, -1, 1, -1, 0, 2]
    # hop_2 at 5: first hop lands on 3 (c), no earlier c -> no answer; at 4 (b): lands on 2 (a), then a at 0 -> 1
    assert hop_reference(chars, 2) == [-1, -1, -1, -1, 1, -1]


@pytest.mark.parametrize("k", [0, 1, 2, 3, 5, 8, 16])
def test_vectorised_answers_equal_the_reference(k):
    task = HopKTask(n=64)
    rng = random.Random(k)
    strings = []
    for _ in range(20):  # random strings, not only the generator's: any string with no repeats of predecessor
        s = [rng.randrange(4)]
        while len(s) < 63:
            c = rng.randrange(4)
            if c != s[-1]:
                s.append(c)
        strings.append(s)
    x = torch.tensor(strings)
    got = task.hop_answers(x, torch.full((len(strings),), k))
    assert got.tolist() == [hop_reference(s, k) for s in strings]


def test_sample_layout_per_row_k_and_determinism():
    task = HopKTask(n=100)
    gen = torch.Generator().manual_seed(3)
    inputs, targets, hops = task.sample(64, gen)
    assert inputs.shape == targets.shape == (64, 100) and hops.shape == (64,)
    assert task.vocab_size == 23 and int(inputs.max()) < 23 and int(targets.max()) < 23
    assert (inputs[:, 0] == hops).all() and (targets[:, 0] == task.blank).all()
    chars = inputs[:, 1:] - task.first_char
    assert ((chars >= 0) & (chars < 4)).all()
    assert (chars[:, 1:] != chars[:, :-1]).all()  # no character equal to its predecessor
    assert len(set(hops.tolist())) > 8  # k drawn per sequence from 0..16
    for row in range(64):
        want = hop_reference(chars[row].tolist(), int(hops[row]))
        got = [t - task.first_char if t != task.no_answer else -1 for t in targets[row, 1:].tolist()]
        assert got == want
    # the training stream is a pure function of (seed, step); other seeds give other sequences
    a, b, c = task.batches(8, seed=0), task.batches(8, seed=0), task.batches(8, seed=1)
    assert torch.equal(a(5)[0], b(5)[0]) and not torch.equal(a(5)[0], a(6)[0]) and not torch.equal(a(5)[0], c(5)[0])


def test_eval_set_has_every_k_and_is_held_out():
    task = HopKTask(n=32, max_hops=4)
    inputs, targets, hops = task.eval_set(per_k=10, seed=99)
    assert torch.bincount(hops).tolist() == [10] * 5
    train_inputs, _ = task.batches(50, seed=0)(0)
    assert not any(torch.equal(r, t) for r in inputs for t in train_inputs)


def test_evaluate_scores_real_answers_only():
    task = HopKTask(n=32, max_hops=3)
    data = task.eval_set(per_k=8)

    class Oracle(torch.nn.Module):  # predicts the stored targets: accuracy 1 at every k, loss near 0
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))
            self.lookup = {}

        def forward(self, x):
            rows = [self.lookup[tuple(r.tolist())] for r in x]
            return torch.nn.functional.one_hot(torch.stack(rows), task.vocab_size).float() * 50

    oracle = Oracle()
    oracle.lookup = {tuple(i.tolist()): t for i, t in zip(data[0], data[1])}
    result = task.evaluate(oracle, data)
    assert all(v == 1.0 for v in result["accuracy_by_k"].values()) and result["loss"] < 1e-6

    class Copier(Oracle):  # answers the current character: right exactly at k = 0
        def forward(self, x):
            return torch.nn.functional.one_hot(x, task.vocab_size).float()

    acc = task.evaluate(Copier(), data)["accuracy_by_k"]
    assert acc[0] == 1.0 and acc[1] == 0.0  # hop_1's answer never equals the current character


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="HopKTask.alphabet"):
        HopKTask(alphabet=1)
    with pytest.raises(ValueError, match="k must lie in 0..16"):
        HopKTask().sample(2, torch.Generator(), k=17)
