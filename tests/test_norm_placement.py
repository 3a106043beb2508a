"""minids.experiments.norm_placement: the pre-norm path is the model itself; the post-norm path is a real rewiring."""

import json
import math

import pytest
import torch

from minids.experiments import norm_placement as npl

from conftest import tiny_config


@pytest.fixture
def model_and_ids():
    cfg = tiny_config(n_layers=4)
    model = npl.build(cfg, seed=0, init_std=0.05)
    with torch.no_grad():  # gains other than 1, so that a norm left out or misplaced would show
        for layer in model.layers:
            layer.input_layernorm.weight.uniform_(0.5, 1.5)
            layer.post_attention_layernorm.weight.uniform_(0.5, 1.5)
    return model, npl.random_batch(cfg, batch=2, seq_len=12, seed=0)


def test_pre_norm_path_is_the_models_own_forward(model_and_ids):
    model, ids = model_and_ids
    with torch.no_grad():
        logits, stream = npl.forward_with_placement(model, ids[:, :-1], "pre")
        assert torch.equal(logits, model(ids[:, :-1]))
    assert len(stream) == model.config.n_layers + 1
    assert torch.equal(stream[0], model.embed_tokens(ids[:, :-1]))


def test_post_norm_layer_normalises_after_each_block(model_and_ids):
    model, ids = model_and_ids
    layer = model.layers[0]
    cos, sin = model.rope(torch.arange(12))
    x = torch.randn(2, 12, model.config.d_model)
    with torch.no_grad():
        out = npl.post_norm_layer(layer, x, cos, sin)
        # Written out independently: norm(x + attn(x)), then norm(h + ffn(h)).
        h = x + layer.self_attn(x, cos, sin)
        h = layer.input_layernorm.weight * h / h.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
        y = h + layer.mlp(h)
        y = layer.post_attention_layernorm.weight * y / y.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    assert torch.allclose(out, y, atol=1e-5)
    with torch.no_grad():
        post, _ = npl.forward_with_placement(model, ids[:, :-1], "post")
        pre, _ = npl.forward_with_placement(model, ids[:, :-1], "pre")
    assert not torch.allclose(post, pre, atol=1e-3)


def test_depth_profile_shapes_and_what_they_measure(model_and_ids):
    model, ids = model_and_ids
    L = model.config.n_layers
    pre, post = (npl.depth_profile(model, ids, p) for p in npl.PLACEMENTS)
    for prof in (pre, post):
        assert len(prof.stream_rms) == len(prof.stream_grad_rms) == L + 1
        assert len(prof.param_grad_norm) == L
        assert all(g > 0 for g in prof.param_grad_norm)
        assert prof.stream_rms[0] == pytest.approx(pre.stream_rms[0])  # same embedding in both
    # Post-norm: each layer ends in an RMSNorm with gain 1 +- 0.5, so the stream's RMS is about 1 after each.
    assert all(0.5 < r < 1.5 for r in post.stream_rms[1:])
    # Pre-norm: nothing rescales the stream, so its RMS is the embedding's plus what the layers add.
    assert pre.stream_rms[-1] > pre.stream_rms[0]
    # The gradient norm is the one torch computes for the layer's parameters.
    model.zero_grad()
    logits, _ = npl.forward_with_placement(model, ids[:, :-1], "pre")
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
    grads = [p.grad for p in model.layers[2].parameters()]
    assert torch.cat([g.flatten() for g in grads]).norm().item() == pytest.approx(pre.param_grad_norm[2], rel=1e-5)
    assert all(p.grad is None for p in npl.build(model.config).parameters())  # untouched model, no grads


def test_bad_placement_and_batch_are_refused(model_and_ids):
    model, ids = model_and_ids
    with pytest.raises(ValueError, match="placement must be one of"):
        npl.forward_with_placement(model, ids, "sandwich")
    with pytest.raises(ValueError, match="max_seq_len"):
        npl.random_batch(model.config, batch=1, seq_len=10_000, seed=0)


def test_training_runs_and_learns_a_little():
    cfg = tiny_config(n_layers=2)
    losses = npl.train_losses(cfg, "pre", steps=10, lr=3e-3, batch=4, seq_len=16)
    assert len(losses) == 10
    assert abs(losses[0] - math.log(cfg.vocab_size)) < 0.1  # starts at chance on the permutation task
    assert losses[-1] < losses[0] - 0.3


def test_command_writes_records(tmp_path):
    out = tmp_path / "np.json"
    assert npl.main(["--preset", "tiny", "--quick", "--out", str(out), "--train-steps", "0"]) == 0
    records = json.loads(out.read_text())
    assert {r["metric"] for r in records} >= {"stream_rms", "stream_grad_rms", "param_grad_norm", "train_loss"}
    assert all(r["model"] == "tiny" and r["impl"] == "minids" for r in records)
    rms = next(r for r in records if r["metric"] == "stream_rms" and r["placement"] == "pre")
    assert len(rms["value"]) == 3 + 1  # --quick keeps 3 layers
    assert rms["seq_len"] == 8


def test_merge_adds_runs_and_replaces_only_what_was_measured_again(tmp_path):
    out = tmp_path / "np.json"
    quick = ["--preset", "tiny", "--quick", "--out", str(out)]
    assert npl.main(quick + ["--init-stds", "0.05"]) == 0  # at-init profile at 0.05 + a training pair
    first = json.loads(out.read_text())
    # a second call with another init std and no --merge replaces the file ...
    assert npl.main(quick + ["--init-stds", "0.02", "--train-steps", "0"]) == 0
    assert {r["init_std"] for r in json.loads(out.read_text()) if r["metric"] == "stream_rms"} == {0.02}
    # ... with --merge it keeps every earlier record that it did not measure again
    out.write_text(json.dumps(first))
    assert npl.main(quick + ["--init-stds", "0.02", "--merge"]) == 0
    merged = json.loads(out.read_text())
    assert {r["init_std"] for r in merged if r["metric"] == "stream_rms"} == {0.05, 0.02}
    train = [r for r in merged if r["metric"] == "train_loss"]
    assert sorted(r["placement"] for r in train) == ["post", "pre"]  # the training pair was replaced, not doubled
    assert all(r in merged for r in first if r["metric"] != "train_loss")
    # no at-init profiles at all: only training records are written
    assert npl.main(quick + ["--init-stds", "--out", str(tmp_path / "train_only.json")]) == 0
    assert {r["metric"] for r in json.loads((tmp_path / "train_only.json").read_text())} == {"train_loss"}
    out.write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="does not hold a list of records"):
        npl.main(quick + ["--merge"])
