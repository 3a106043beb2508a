"""Generated data: the byte tokenizer, the stdlib corpus and the k-hop chains (answers checked by a solver)."""

import hashlib
import json
import zlib

import pytest
import torch

from minids.data import ByteTokenizer, KHopTask, build_corpus, corpus_manifest, corpus_tokens, lm_batches
from minids.data.corpus import corpus_dir


def test_byte_tokenizer_round_trips_any_text():
    tok = ByteTokenizer()
    text = "DeepSeek LLM: 67B, 95 camadas — profundidade ✓"
    ids = tok.encode(text)
    assert len(ids) == len(text.encode("utf-8")) and max(ids) < tok.vocab_size == 256
    assert tok.decode(ids) == text
    assert tok.encode_tensor(text).tolist() == ids
    assert tok.decode(ids[:-1]).endswith("\ufffd")  # a cut multi-byte character is replaced, not an error
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 256\)"):
        tok.decode([300])


def test_committed_corpus_matches_its_manifest():
    manifest = corpus_manifest()
    for split in ("train", "val"):
        data = (corpus_dir() / manifest["splits"][split]["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == manifest["splits"][split]["sha256"]
        assert corpus_tokens(split).numel() == manifest["splits"][split]["bytes"]
    assert manifest["splits"]["train"]["bytes"] > 5 * manifest["splits"]["val"]["bytes"]
    assert json.dumps(manifest)  # and the version that built it is recorded
    assert manifest["python"].count(".") == 2


def test_corpus_is_english_text():
    text = bytes(corpus_tokens("train")[:20000].tolist()).decode("utf-8", errors="replace")
    assert text.count(" the ") > 50


def test_build_corpus_on_a_fake_stdlib(tmp_path):
    """Docstrings of modules, classes and functions; repeats dropped; tests and non-Python files skipped;
    a module goes wholly to one split by crc32 of its path; the same input builds the same bytes."""
    lib = tmp_path / "lib"
    (lib / "test").mkdir(parents=True)
    (lib / "test" / "test_x.py").write_text('"""A test module docstring that must be skipped."""')
    (lib / "notes.txt").write_text("not python")
    names = [f"mod{i}.py" for i in range(30)]
    for i, name in enumerate(names):
        (lib / name).write_text(
            f'"""Module {i} explains what it does in a sentence."""\n'
            f'class C:\n    """Class of module {i}, long enough to keep."""\n'
            f'    def f(self):\n        """Shared docstring that every module repeats."""\n'
            f'def g():\n    """short"""\n'
        )
    out = build_corpus(tmp_path / "a", stdlib=str(lib))
    texts = {s: (tmp_path / "a" / f"stdlib_docstrings.{s}.txt").read_text() for s in ("train", "val")}
    both = texts["train"] + texts["val"]
    assert "must be skipped" not in both and "not python" not in both and "short" not in both
    assert both.count("Shared docstring") == 1
    val_modules = {n for n in names if zlib.crc32(n.encode()) % 10 == 0}
    assert val_modules  # the fake library is large enough to put some modules in validation
    for i, name in enumerate(names):
        split = "val" if name in val_modules else "train"
        assert f"Module {i} explains" in texts[split] and f"Class of module {i}," in texts[split]
    assert out["splits"]["val"]["modules"] == len(val_modules)
    again = build_corpus(tmp_path / "b", stdlib=str(lib))
    assert again["splits"] == out["splits"]  # same sha256: deterministic


def test_lm_batches_are_shifted_windows_and_replay_from_the_generator():
    tokens = torch.arange(1000)
    get_batch = lm_batches(tokens, batch_size=4, seq_len=16)
    x, y = get_batch(0, torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (4, 16)
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)
    x2, _ = get_batch(0, torch.Generator().manual_seed(1))
    assert torch.equal(x, x2)
    with pytest.raises(ValueError, match="too few"):
        lm_batches(torch.arange(10), 2, 16)


def solve(text: str) -> dict[str, str]:
    """An independent solver: follow the assignments until a digit."""
    statements, queries = text.split(";?", 1) if ";?" in text else (text, "")
    env = dict(s.split("=") for s in statements.rstrip(";").split(";"))
    answers = {}
    for var in env:
        value, hops = var, 0
        while not value.isdigit():
            value, hops = env[value], hops + 1
        answers[var] = (value, hops)
    return answers


def test_khop_answers_and_hop_counts_are_right():
    task = KHopTask(max_hops=6)
    x, y, hops = task.sample(64, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (64, task.seq_len)
    tok = ByteTokenizer()
    for row in range(64):
        text = tok.decode(torch.cat([x[row], y[row, -1:]]))
        answers = solve(text[: 4 * task.n_variables])
        assert len(answers) == 21 and len(set(answers)) == 21  # 21 distinct variables
        positions = torch.nonzero(hops[row]).flatten().tolist()
        assert positions == [task.seq_len - 1]  # one query, answered by the last target
        for i in positions:
            var = tok.decode([int(x[row, i - 1])])
            assert tok.decode([int(x[row, i - 2])]) == "?" and tok.decode([int(x[row, i])]) == "="
            assert answers[var] == (tok.decode([int(y[row, i])]), int(hops[row, i]))
        assert (y[row][hops[row] == 0] == -100).all()
    assert set(hops[:, -1].tolist()) == {1, 2, 3, 4, 5, 6}  # every k is asked across the batch


def test_khop_is_seeded_and_the_baseline_is_a_digit_guess():
    task = KHopTask()
    a, b = task.eval_set(32), task.eval_set(32)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    baseline = task.context_digit_baseline(task.eval_set(4000))
    # P(a random chain's digit equals mine) = 1/6 (itself) + 5/6 * 1/10 = 0.25
    assert baseline == pytest.approx(0.25, abs=0.01)
    four = KHopTask(max_hops=4)  # 1/4 + 3/4 * 1/10
    assert four.context_digit_baseline(four.eval_set(4000)) == pytest.approx(0.325, abs=0.01)
    with pytest.raises(ValueError, match="max_hops <= 6"):
        KHopTask(max_hops=7)
