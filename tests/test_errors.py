import pytest
import torch

from minids import DeepSeekLM, ModelConfig


@pytest.fixture(scope="module")
def model():
    return DeepSeekLM(ModelConfig.preset("tiny")).eval()


@pytest.mark.parametrize("bad, message", [(-1, r"min -1"), (256, r"\[0, vocab_size\) = \[0, 256\); got min 0, max 256")])
def test_ids_outside_the_vocabulary(model, bad, message):
    ids = torch.zeros(1, 4, dtype=torch.long)
    ids[0, 2] = bad
    with pytest.raises(ValueError, match=message):
        model(ids)


def test_non_integer_ids(model):
    with pytest.raises(TypeError, match="integer tensor .* got torch.float32"):
        model(torch.zeros(1, 4))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        model([[1, 2, 3]])


def test_wrong_rank_or_empty(model):
    with pytest.raises(ValueError, match=r"shape \(batch, seq\).*got \(4,\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"got \(1, 0\)"):
        model(torch.zeros(1, 0, dtype=torch.long))


def test_longer_than_max_seq_len(model):
    with pytest.raises(ValueError, match="positions 0..128 but max_seq_len is 128"):
        model(torch.zeros(1, 129, dtype=torch.long))


def test_unknown_attention_impl(model):
    with pytest.raises(ValueError, match="'flash' is not one of"):
        model.attn_impl = "flash"


def test_model_needs_a_config():
    with pytest.raises(TypeError, match="takes a ModelConfig"):
        DeepSeekLM({"d_model": 64})
