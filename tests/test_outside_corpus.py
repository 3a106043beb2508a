"""minids.experiments.outside_corpus on a tiny setting: the files it picks, and the scores it gives."""

import math

import pytest
import torch

from minids import DeepSeekLM, ModelConfig
from minids.data.pretrain import pretrain_text
from minids.experiments import outside_corpus as oc
from minids.ngram import ByteNGram
from minids.paths import project_path
from minids.tokenizer import Tokenizer


def test_picks_files_outside_the_corpus_deterministically():
    a = oc.pick_files("peft", "peft", 20_000)
    assert a == oc.pick_files("peft", "peft", 20_000)  # the same files every time
    assert 10_000 < sum(f["bytes"] for f in a) <= 20_000  # fills the budget, never past it
    for f in a:
        assert f["path"].startswith("peft/") and f["path"].endswith(".py")
        assert (oc.site_packages("peft") / f["path"]).is_file()
        assert f["version"] == __import__("peft").__version__
    assert "peft" not in oc.corpus_sources() and {"python", "torch"} <= oc.corpus_sources()
    text = oc.source_text(a[:2])
    assert text.startswith(f"# file: {a[0]['path']}\n") and f"\n# file: {a[1]['path']}\n" in text


def test_refuses_a_package_the_corpus_holds():
    with pytest.raises(ValueError, match="in the pre-training corpus"):
        oc.pick_files("torch", "torch", 1000)
    with pytest.raises(ValueError, match="max_bytes must be positive"):
        oc.pick_files("peft", "peft", 0)


def test_tiny_run_scores_model_and_ngram_on_the_same_text():
    tokenizer = Tokenizer.from_dir(project_path("data", "tokenizer"))
    torch.manual_seed(0)
    model = DeepSeekLM(ModelConfig.preset("tiny").replace(vocab_size=8064, max_seq_len=64)).eval()
    # a byte 2-gram fitted on a slice of the corpus (every byte value appended once, so none has probability 0)
    train = pretrain_text("train")[:200_000].encode() + bytes(range(256))
    record = oc.run(sources=(("peft", "peft"),), max_bytes=6000, seq_len=64, model=model, tokenizer=tokenizer,
                    ngram=ByteNGram(2).fit(train), log=lambda *a: None)
    (p,) = record["packages"]
    assert p["windows"] >= 1 and p["scored_tokens"] == 64 * p["windows"]
    assert 0 < p["scored_bytes"] <= p["text_bytes"]
    # an untrained model is close to uniform over its 8,064 ids: log2(8064) bits per token, spread over the bytes
    uniform = math.log2(8064) * p["scored_tokens"] / p["scored_bytes"]
    assert 0.8 * uniform < p["model_bpb"] < 1.2 * uniform
    assert 1.0 < p["ngram_bpb"] < 8.0  # a byte 2-gram fitted on Python beats a uniform byte
    assert record["all"]["model_bpb"] == pytest.approx(p["model_bpb"]) and record["ngram_order"] == 2
    assert record["files"] and all(f["package"] == "peft" for f in record["files"])
