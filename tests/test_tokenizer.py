"""minids.tokenizer: DeepSeek-style byte-level BPE through Hugging Face tokenizers."""

import random

import pytest
import torch

from minids.data import corpus_text
from minids.tokenizer import BOS, EOS, Tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer([corpus_text("train")[:300_000]], n_bpe=1000)


def test_any_unicode_round_trips_exactly(tok):
    rng = random.Random(0)
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x4E00, 0x4FFF), (0x1F600, 0x1F64F), (0x0, 0x1F),
              (0x300, 0x36F), (0xAC00, 0xACFF)]
    for _ in range(50):
        text = "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(0, 60)))
        assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode("")) == ""


def test_numbers_are_split_into_single_digits(tok):
    pieces = tok.tokens("In 2024 it cost 67000000 and 3.14159")
    digits = [p for p in pieces if any(ch.isdigit() for ch in p)]
    assert digits and all(len(p.lstrip("Ġ")) == 1 for p in digits)
    assert "".join(p.lstrip("Ġ") for p in digits) == "2024670000003" + "14159"


def test_specials_and_padding_follow_deepseek(tok):
    assert tok.vocab_size % 128 == 0 and tok.padded_vocab_size() == tok.vocab_size
    assert tok.backend.id_to_token(tok.bos_id) == BOS and tok.backend.id_to_token(tok.eos_id) == EOS
    ids = tok.encode("hello", bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and tok.decode(ids) == "hello"
    assert BOS in tok.decode(ids, skip_special=False)


def test_the_saved_file_gives_the_same_ids_in_tokenizers_itself(tok, tmp_path):
    from tokenizers import Tokenizer as Backend

    tok.save(tmp_path / "tokenizer.json")
    again, raw = Tokenizer.from_dir(tmp_path), Backend.from_file(str(tmp_path / "tokenizer.json"))
    text = corpus_text("val")[:5000]
    assert again.encode(text) == raw.encode(text, add_special_tokens=False).ids == tok.encode(text)
    assert again.vocab_size == tok.vocab_size


def test_encode_batch_pads_on_either_side(tok):
    ids, mask = tok.encode_batch(["a b c d e", "a"], left_pad=True)
    n = len(tok.encode("a b c d e"))
    assert ids.shape == mask.shape == (2, n) and mask.sum(1).tolist() == [n, 1]
    assert mask[1, -1] == 1 and ids[1, 0] == tok.eos_id and ids[1, -1] == tok.encode("a")[0]
    right, rmask = tok.encode_batch(["a b c d e", "a"])
    assert rmask[1, 0] == 1 and right[1, 0] == tok.encode("a")[0]


def test_bad_input_is_named(tok, tmp_path):
    with pytest.raises(ValueError, match=r"ids must lie in \[0, "):
        tok.decode([tok.vocab_size])
    with pytest.raises(TypeError, match="takes a str"):
        tok.encode(b"bytes")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        Tokenizer.from_dir(tmp_path)
    with pytest.raises(ValueError, match="n_bpe"):
        train_tokenizer(["x"], n_bpe=100)
    assert torch.is_tensor(tok.encode_batch(["x"])[0])


def test_text_generation_streams_whole_characters_that_join_to_the_tokens(tok):
    from minids import DeepSeekLM, generate, generate_text, stream_text
    from minids.config import ModelConfig

    torch.manual_seed(0)
    model = DeepSeekLM(ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                                   d_ff=64, max_seq_len=128)).eval()
    prompt = "Return the value of"
    pieces = list(stream_text(model, tok, prompt, 40))
    ids = torch.tensor([tok.encode(prompt, bos=True)])
    tokens = generate(model, ids, 40, eos_id=tok.eos_id)[0, ids.shape[1]:].tolist()
    tokens = tokens[:tokens.index(tok.eos_id)] if tok.eos_id in tokens else tokens
    assert "".join(pieces) == tok.decode(tokens) == generate_text(model, tok, prompt, 40)
    # a random model emits byte soup: invalid bytes stay U+FFFD, but no piece ends in a character still to come
    assert len(pieces) > 1 and all(not p.endswith("\ufffd") for p in pieces[:-1])
    a = generate_text(model, tok, prompt, 20, temperature=1.0, generator=torch.Generator().manual_seed(3))
    b = generate_text(model, tok, prompt, 20, temperature=1.0, generator=torch.Generator().manual_seed(3))
    assert a == b
    with pytest.raises(TypeError, match="prompt as a str"):
        generate_text(model, tok, [1, 2], 5)
