"""DeepSeekLM.save_hf: a folder that transformers loads as it is, same logits and same token ids."""

import json
import os

import pytest
import torch

from minids import DeepSeekLM
from minids.data import corpus_text
from minids.tokenizer import train_tokenizer

from conftest import rel_err, tiny_config


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer([corpus_text("train")[:200_000]], n_bpe=600)


def test_transformers_loads_the_model_and_tokenizer_unchanged(tmp_path, tok):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = DeepSeekLM(tiny_config(vocab_size=tok.vocab_size)).eval()
    folder = model.save_hf(tmp_path / "mini", tokenizer=tok)
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors", "special_tokens_map.json",
                                          "tokenizer.json", "tokenizer_config.json"]
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    text = "def f(x):\n    return 12 * x  # déjà vu"
    ids = tok.encode(text)
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == ids
    assert hf_tok.decode(ids) == text == tok.decode(ids)
    assert hf_tok.bos_token_id == tok.bos_id and hf_tok.eos_token_id == tok.eos_id
    x = torch.tensor([ids])
    with torch.no_grad():
        assert rel_err(model(x), hf(x).logits) <= 1e-5
        again = DeepSeekLM.from_hf(folder)
        assert torch.equal(again(x), model(x))  # minids reads back exactly what it wrote


def test_bf16_export_and_atomic_replace(tmp_path, tok, monkeypatch):
    torch.manual_seed(0)
    model = DeepSeekLM(tiny_config(vocab_size=tok.vocab_size))
    folder = model.save_hf(tmp_path / "m", dtype=torch.bfloat16)
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    before = (folder / "model.safetensors").read_bytes()

    import safetensors.torch

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        model.save_hf(folder, tokenizer=tok)
    assert (folder / "model.safetensors").read_bytes() == before  # the old folder is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # and no partial folder is left behind


def test_a_tokenizer_larger_than_the_embedding_is_refused(tmp_path, tok):
    model = DeepSeekLM(tiny_config(vocab_size=tok.vocab_size - 1))
    with pytest.raises(ValueError, match="vocab_size"):
        model.save_hf(tmp_path / "x", tokenizer=tok)
