"""The pre-trained miniature (minids.experiments.miniature), its committed checkpoint, and the byte n-gram baseline."""

import json
import math

import numpy as np
import pytest
import torch

from minids import DeepSeekLM
from minids.experiments import miniature
from minids.ngram import ByteNGram
from minids.paths import project_path
from minids.tokenizer import Tokenizer

CHECKPOINT = project_path("data", "checkpoints", miniature.NAME)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.from_dir(project_path("data", "tokenizer"))


def test_token_bytes_count_the_utf8_bytes(tokenizer):
    text = 'def f(x):\n    """Größe: 3.14 → π"""\n    return x  # 日本\n'
    ids = tokenizer.encode(text)
    nbytes = miniature.token_bytes(tokenizer, 8064)
    assert int(nbytes[ids].sum()) == len(text.encode("utf-8"))
    assert nbytes[tokenizer.eos_id] == 0 and nbytes[tokenizer.bos_id] == 0


def test_token_stream_joins_documents_with_eos(tokenizer):
    text = "# file: a.py\nx = 1\n\n# file: b.py\ny = 2\n"
    assert miniature.split_documents(text) == ["# file: a.py\nx = 1\n", "# file: b.py\ny = 2\n"]
    stream = miniature.token_stream(text, tokenizer).tolist()
    assert stream.count(tokenizer.eos_id) == 2 and stream[-1] == tokenizer.eos_id
    first = stream[:stream.index(tokenizer.eos_id)]
    assert tokenizer.decode(first) == "# file: a.py\nx = 1\n"


def test_val_windows_score_every_token_but_the_first_once():
    stream = torch.arange(50)
    w = miniature.val_windows(stream, seq_len=8)
    assert w.shape == (6, 9)
    targets = w[:, 1:].flatten().tolist()
    assert targets == list(range(1, 49))  # each once, in order; the tail that fills no window is left out


def test_held_out_loss_is_cross_entropy_in_bits_per_byte(tokenizer):
    torch.manual_seed(0)
    model = DeepSeekLM(miniature.SETTINGS["tiny"].config).eval()
    stream = miniature.token_stream("# file: x.py\n" + "import os\nprint(os.getcwd())\n" * 20, tokenizer)
    windows = miniature.val_windows(stream, seq_len=16)
    nbytes = miniature.token_bytes(tokenizer, model.config.vocab_size)
    out = miniature.held_out_loss(model, windows, nbytes, batch=3)
    with torch.no_grad():
        logits = model(windows[:, :-1])
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten(), reduction="sum")
    assert out["val_tokens"] == windows[:, 1:].numel()
    assert out["val_loss"] == pytest.approx(ce.item() / out["val_tokens"], rel=1e-5)
    assert out["val_bytes"] == int(nbytes[windows[:, 1:]].sum())
    assert out["val_bpb"] == pytest.approx(ce.item() / math.log(2) / out["val_bytes"], rel=1e-5)


def test_tiny_run_trains_and_saves_a_loadable_folder(tmp_path, tokenizer):
    record = miniature.pretrain(miniature.SETTINGS["tiny"], device="cpu", out_dir=tmp_path / "mini",
                                log=lambda *_: None, progress=False)
    curve = record["curve"]["loss"]
    assert curve[-1] < curve[0] - 0.5  # the training loss falls
    assert record["tokens_seen"] == record["steps"] * record["batch_tokens"]
    assert record["best"]["val_loss"] == min(e["val_loss"] for e in record["evals"])
    model = DeepSeekLM.from_hf(tmp_path / "mini")
    assert model.config == miniature.SETTINGS["tiny"].config
    assert next(model.parameters()).dtype == torch.bfloat16  # saved in bf16, loaded as saved
    assert Tokenizer.from_dir(tmp_path / "mini").encode("x = 1") == tokenizer.encode("x = 1")


@pytest.mark.skipif(not (CHECKPOINT / "model.safetensors").is_file(), reason="checkpoint not committed")
def test_committed_checkpoint_loads_and_has_learned(tokenizer):
    record = json.loads(project_path("data", "results", "miniature_cuda.json").read_text())
    model = DeepSeekLM.from_hf(CHECKPOINT, dtype=torch.float32).eval()
    assert model.config == miniature.CONFIG
    assert model.num_parameters() == record["params"] == 16_073_280
    assert model.config.attention_kind == "GQA 8:1"
    from minids.data.pretrain import pretrain_text

    # 16 windows spread over the whole validation split (files differ a lot: the first, codecs.py, alone
    # scores 1.26 bits/byte), held-out Python it never saw: far below the byte 7-gram's 1.61 bits/byte.
    windows = miniature.val_windows(miniature.token_stream(pretrain_text("val"), tokenizer), seq_len=256)
    windows = windows[torch.linspace(0, len(windows) - 1, 16).long()]
    out = miniature.held_out_loss(model, windows, miniature.token_bytes(tokenizer, 8064))
    assert out["val_bpb"] < 1.1, out
    assert record["best_bf16"]["val_bpb"] < 1.0


def test_byte_ngram_is_a_distribution_and_improves_with_order():
    train = (b"def add(a, b):\n    return a + b\n\n" * 30) + bytes(range(32, 127))
    val = b"def add(a, b):\n    return a + b\n"
    for order in (1, 2, 4, 6):
        model = ByteNGram(order).fit(train)
        context = b"def ad"
        total = sum(model.probs(context + bytes([b]))[-1] for b in range(256))
        assert total == pytest.approx(1.0, abs=1e-9)
        assert np.all(model.probs(b"\x00\xff zq") > 0)  # never-seen bytes keep some mass
    bits = [ByteNGram(n).fit(train).bits_per_byte(val) for n in (1, 3, 6)]
    assert bits[0] > bits[1] > bits[2]
    with pytest.raises(ValueError, match="order must be"):
        ByteNGram(8)
    with pytest.raises(RuntimeError, match="fit"):
        ByteNGram(2).probs(b"x")
