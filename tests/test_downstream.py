"""The fine-tuning tasks (minids.data.downstream): what is masked, what is scored, and how."""

import pytest
import torch

from minids.data.downstream import IGNORE, MASK, FunctionNames, HopInVocab, find_functions
from minids.paths import project_path
from minids.tokenizer import Tokenizer

SOURCE = '''
class Stack:
    def __init__(self):
        self.items = []

    def push_item(self, x):
        """Put x on top; push_item returns nothing."""
        self.items.append(x)

    def depth(self):
        return len(self.items)


@overload
def stub(x: int) -> int: ...
def stub(x):
    pass


def fact(n):
    if n < 2:
        return 1
    return n * fact(n - 1)
'''


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.from_dir(project_path("data", "tokenizer"))


class Oracle(torch.nn.Module):
    """A 'model' whose logits put all mass on the given targets (and on `wrong` where asked)."""

    def __init__(self, inputs, targets, vocab=8064, wrong=None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.table = {tuple(x.tolist()): y for x, y in zip(inputs.long(), targets.long())}
        self.vocab, self.wrong = vocab, wrong

    def forward(self, x):
        ys = torch.stack([self.table[tuple(row.tolist())] for row in x])
        ys = torch.where(ys == IGNORE, 0, ys)
        if self.wrong is not None:
            ys = self.wrong(ys)
        return torch.nn.functional.one_hot(ys, self.vocab).float() * 50


def test_functions_are_found_with_their_bodies_and_masked():
    found = {f.name: f.source for f in find_functions(SOURCE)}
    assert set(found) == {"push_item", "depth", "fact"}  # no dunder, no stub, no one-line "pass"
    assert found["push_item"].startswith(f"def {MASK}(self, x):")  # dedented
    assert f'"""Put x on top; {MASK} returns nothing."""' in found["push_item"]
    assert found["fact"].endswith(f"return n * {MASK}(n - 1)")  # recursion masked too
    assert "def depth" not in found["push_item"] and "fact" not in found["fact"]


def test_names_are_scored_on_the_answer_only_and_by_exact_match(tokenizer):
    task = FunctionNames(tokenizer, SOURCE, SOURCE, seq_len=48)
    inputs, targets = task.eval
    assert inputs.shape == targets.shape == (3, 48)
    for i, name in enumerate(task.eval_names):
        scored = targets[i].long() != IGNORE
        assert tokenizer.decode(targets[i].long()[scored].tolist()) == f" {name}\n"
        assert task.describe(i).endswith(f"# name: -> {' ' + name + chr(10)!r}")
    assert task.evaluate(Oracle(inputs, targets), task.eval_set())["value"] == 1.0
    # one answer token wrong in one example: that example is no longer an exact match
    first_answer = (targets[0].long() != IGNORE).nonzero()[0].item()

    def spoil(ys):
        ys = ys.clone()
        if torch.equal(ys, torch.where(targets[:1].long() == IGNORE, 0, targets[:1].long())):
            ys[0, first_answer] += 1
        return ys

    scored = [task.evaluate(Oracle(inputs[i:i + 1], targets[i:i + 1], wrong=spoil), (inputs[i:i + 1], targets[i:i + 1]))
              for i in range(3)]
    assert [s["value"] for s in scored] == [0.0, 1.0, 1.0]
    assert task.chance == pytest.approx(1 / 3)  # each name once: the commonest is one of three


def test_long_functions_keep_their_beginning_and_the_cue(tokenizer):
    text = "def f(a):\n" + "".join(f"    a = a + {i}\n" for i in range(200)) + "    return a\n"
    task = FunctionNames(tokenizer, text, text, seq_len=64)
    prompt = task.describe(0)
    assert prompt.startswith(f"def {MASK}(a):\n    a = a + 0") and "\n# name: -> ' f\\n'" in prompt


def test_name_batches_are_a_function_of_seed_and_step(tokenizer):
    task = FunctionNames(tokenizer, SOURCE, SOURCE, seq_len=48)
    a, b = task.batches(4, seed=3), task.batches(4, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a(5), b(5)))
    x, y = a(5)
    assert x.dtype == y.dtype == torch.long and x.shape == (4, 48)


def test_hop_k_in_the_vocabulary(tokenizer):
    task = HopInVocab(tokenizer, n=24, max_hops=3)
    assert [tokenizer.decode([i]) for i in task.to_vocab.tolist()] == ["0", "1", "2", "3", "a", "b", "c", "d", "~", "_"]
    x, y = task.batches(5, seed=1)(0)
    raw_x, raw_y = task.task.batches(5, seed=1)(0)
    assert torch.equal(x, task.to_vocab[raw_x]) and torch.equal(y, task.to_vocab[raw_y])
    inputs, targets, hops = task.eval_set(8)
    perfect = task.evaluate(Oracle(inputs, targets), (inputs, targets, hops))
    assert perfect["value"] == 1.0 and set(perfect["accuracy_by_k"]) == {0, 1, 2, 3}
    # answering the current character is right for k = 0 and never for k = 1 (one hop leaves the character)
    copy = task.evaluate(Oracle(inputs, inputs), (inputs, targets, hops))
    assert copy["accuracy_by_k"][0] == 1.0 and copy["accuracy_by_k"][1] == 0.0
    with pytest.raises(ValueError, match="one digit"):
        HopInVocab(tokenizer, max_hops=10)
