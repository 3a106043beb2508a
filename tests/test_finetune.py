"""Full fine-tuning through the training loop (minids.finetune): frozen weights stay, the others move."""

import pytest
import torch

from minids import DeepSeekLM
from minids.finetune import freeze, frozen_names, trainable_params, unfreeze
from minids.train import TrainConfig, train

from conftest import tiny_config


def copy_params(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def steps_of_training(model, steps=3):
    cfg = model.config
    data = torch.randint(0, cfg.vocab_size, (4, 13), generator=torch.Generator().manual_seed(0))
    train(model, lambda step, g: (data[:, :-1], data[:, 1:]),
          TrainConfig(steps=steps, batch_size=4, seq_len=12, peak_lr=1e-2, warmup_steps=0), progress=False)


def test_frozen_layers_and_embeddings_do_not_change_the_rest_does():
    model = DeepSeekLM(tiny_config(n_layers=3))
    freeze(model, layers=[0, -2], embeddings=True)  # -2 is layer 1
    before = copy_params(model)
    frozen = set(frozen_names(model))
    assert frozen == {n for n in before if n.startswith(("layers.0.", "layers.1.", "embed_tokens."))}
    assert trainable_params(model) == sum(p.numel() for n, p in model.named_parameters() if n not in frozen)
    steps_of_training(model)
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, before[name]), f"{name} is frozen but changed (weight decay or an update)"
        else:
            assert not torch.equal(p, before[name]), f"{name} is trainable but did not change"


def test_lm_head_and_final_norm_can_be_frozen_and_unfreeze_undoes_it():
    model = DeepSeekLM(tiny_config())
    freeze(model, lm_head=True, final_norm=True)
    assert set(frozen_names(model)) == {"lm_head.weight", "norm.weight"}
    unfreeze(model)
    assert frozen_names(model) == [] and trainable_params(model) == model.num_parameters()


def test_freezing_everything_is_refused_by_the_loop():
    model = DeepSeekLM(tiny_config())
    freeze(model, layers=range(model.config.n_layers), embeddings=True, lm_head=True, final_norm=True)
    assert trainable_params(model) == 0
    with pytest.raises(ValueError, match="every parameter of the model is frozen"):
        steps_of_training(model, steps=1)


@pytest.mark.parametrize("layers", [[2], [-3], [True], ["0"]])
def test_bad_layer_indices(layers):
    with pytest.raises(ValueError, match="the model has 2 layers"):
        freeze(DeepSeekLM(tiny_config()), layers=layers)


def test_freeze_takes_a_deepseeklm():
    with pytest.raises(TypeError, match="DeepSeekLM"):
        freeze(torch.nn.Linear(2, 2))
