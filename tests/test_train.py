"""The training loop: the paper's recipe step by step, checkpoints written atomically, resume bit for bit."""

import glob
import json
import os

import pytest
import torch

import minids.checkpoint as checkpoint
from minids import DeepSeekLM, ModelConfig
from minids.data import KHopTask, corpus_tokens, lm_batches
from minids.schedule import multistep_lr
from minids.train import TrainConfig, lm_loss, train

CFG = ModelConfig.preset("tiny").replace(vocab_size=256, max_seq_len=64)
TC = TrainConfig(steps=12, batch_size=4, seq_len=32, peak_lr=3e-3, warmup_steps=2, eval_every=4, seed=7)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models gain nothing from a second thread, and on a shared CPU OpenMP's spinning threads can make
    # a step 20x slower; one thread keeps this file fast and its timing honest.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def get_batch():
    return lm_batches(corpus_tokens("train")[:200_000], TC.batch_size, TC.seq_len)


def fresh_model(seed=0):
    torch.manual_seed(seed)
    return DeepSeekLM(CFG)


def test_each_step_is_adamw_with_the_papers_recipe(get_batch):
    """Three steps of train() against the recipe written out by hand with torch's own AdamW."""
    config = TrainConfig(steps=3, batch_size=4, seq_len=32, peak_lr=1e-2, warmup_steps=1, seed=3,
                         grad_clip=0.05)  # a low clip so that clipping really happens
    model, reference = fresh_model(), fresh_model()
    history = train(model, get_batch, config, progress=False)

    decay = [p for p in reference.parameters() if p.ndim >= 2]
    no_decay = [p for p in reference.parameters() if p.ndim < 2]  # the RMSNorm gains
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(3)
    for step in range(3):
        for g in opt.param_groups:
            g["lr"] = multistep_lr(step, 3, 1e-2, 1)
        x, y = get_batch(step, gen)
        loss = torch.nn.functional.cross_entropy(reference(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.05)
        assert norm > 0.05
        opt.step()
        assert history["losses"][step] == pytest.approx(loss.item(), rel=1e-6)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
    assert history["lrs"] == [multistep_lr(s, 3, 1e-2, 1) for s in range(3)]
    assert history["tokens"] == 3 * 4 * 32


def test_loss_falls_on_the_corpus(get_batch):
    config = TrainConfig(steps=40, batch_size=8, seq_len=32, peak_lr=3e-3, warmup_steps=4, seed=0)
    history = train(fresh_model(), get_batch, config, progress=False)
    first, end = history["losses"][0], sum(history["losses"][-5:]) / 5
    assert first == pytest.approx(torch.log(torch.tensor(256.0)).item(), abs=0.05)  # uniform over 256 bytes
    assert end < first - 1.0


def test_resume_after_a_crash_is_bit_for_bit(get_batch, tmp_path):
    evals = lambda m: {"w0": m.lm_head.weight[0, 0].item()}  # noqa: E731
    straight = fresh_model()
    expected = train(straight, get_batch, TC, eval_fn=evals, progress=False)

    def crashing(step, generator):
        if step == 10:
            raise RuntimeError("power cut")
        return get_batch(step, generator)

    with pytest.raises(RuntimeError, match="power cut"):
        train(fresh_model(), crashing, TC, eval_fn=evals, checkpoint_dir=tmp_path, progress=False)
    # A different initialisation proves the weights really come from the checkpoint (written at step 8).
    resumed_model = fresh_model(seed=1)
    resumed = train(resumed_model, get_batch, TC, eval_fn=evals, checkpoint_dir=tmp_path, resume=True,
                    progress=False)
    assert resumed["resumed_from"] == 8
    assert resumed["losses"] == expected["losses"]  # exact float equality, every step
    assert resumed["grad_norms"] == expected["grad_norms"]
    assert resumed["evals"] == expected["evals"]
    for p, q in zip(resumed_model.parameters(), straight.parameters()):
        assert torch.equal(p, q)


def test_checkpoint_holds_optimizer_and_generator_state(get_batch, tmp_path):
    model = fresh_model()
    config = TrainConfig(**{**TC.__dict__, "steps": 4, "eval_every": 0})
    train(model, get_batch, config, checkpoint_dir=tmp_path, progress=False)
    gen = torch.Generator()
    other = fresh_model(seed=5)
    opt = torch.optim.AdamW([{"params": [p for p in other.parameters() if p.ndim >= 2]},
                             {"params": [p for p in other.parameters() if p.ndim < 2]}])
    step, meta = checkpoint.load_checkpoint(tmp_path, other, opt, gen)
    assert step == 4 and len(meta["history"]["losses"]) == 4
    # The generator continues where training stopped: replaying 4 batches from the seed lands on its state.
    replay = torch.Generator().manual_seed(TC.seed)
    for s in range(4):
        get_batch(s, replay)
    assert torch.equal(gen.get_state(), replay.get_state())
    # AdamW's moments came back too (not a fresh optimizer's empty state), and the weights.
    states = [opt.state[p] for p in other.parameters()]
    assert all(int(s["step"]) == 4 and s["exp_avg_sq"].sum() > 0 for s in states)
    for p, q in zip(other.parameters(), model.parameters()):
        assert torch.equal(p, q)


def test_a_failed_write_leaves_the_old_checkpoint(get_batch, tmp_path, monkeypatch):
    model = fresh_model()
    opt = torch.optim.AdamW(model.parameters())
    gen = torch.Generator().manual_seed(0)
    checkpoint.save_checkpoint(tmp_path, model, opt, gen, step=5)
    before = open(checkpoint.checkpoint_path(tmp_path), "rb").read()

    def half_write(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", half_write)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_checkpoint(tmp_path, model, opt, gen, step=6)
    assert open(checkpoint.checkpoint_path(tmp_path), "rb").read() == before
    assert os.listdir(tmp_path) == [checkpoint.CHECKPOINT_NAME]  # no temp file left behind
    assert not glob.glob(os.path.join(tmp_path, "*.tmp"))


def test_resume_refuses_another_config(get_batch, tmp_path):
    config = TrainConfig(steps=4, batch_size=4, seq_len=32, peak_lr=3e-3, warmup_steps=1)
    train(fresh_model(), get_batch, config, checkpoint_dir=tmp_path, progress=False)
    other = TrainConfig(steps=4, batch_size=4, seq_len=32, peak_lr=1e-3, warmup_steps=1)
    with pytest.raises(ValueError, match="peak_lr: checkpoint 0.003 vs now 0.001"):
        train(fresh_model(), get_batch, other, checkpoint_dir=tmp_path, resume=True, progress=False)


def test_masked_targets_are_ignored():
    task = KHopTask(max_hops=2)
    x, y, hops = task.sample(3, torch.Generator().manual_seed(0))
    logits = torch.randn(*x.shape, 256)
    mask = hops > 0
    expected = torch.nn.functional.cross_entropy(logits[mask], y[mask])
    torch.testing.assert_close(lm_loss(logits, y), expected)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(steps=0), "steps must be a positive int"),
        (dict(warmup_steps=20), r"warmup_steps \(20\) exceeds steps \(12\)"),
        (dict(schedule="linear"), "schedule 'linear' is not one of multistep, cosine"),
        (dict(peak_lr=-1.0), "peak_lr must be positive"),
        (dict(betas=(0.9, 1.5)), "betas must be two numbers"),
    ],
)
def test_bad_config_is_named(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{**TC.__dict__, **changes})


def test_depth_vs_width_runner_writes_every_field_and_survives_a_failure(tmp_path, monkeypatch):
    from dataclasses import replace

    import minids.experiments.depth_vs_width as dvw

    setting = replace(dvw.SETTINGS["tiny"], layers=(1, 2), steps=2, evals=1, khop_eval_examples=8,
                      corpus_eval_windows=4, latency_repeats=1, throughput_batch=2, corpus_seq_len=16)
    real = dvw.train_one

    def flaky(setting, shape, task, seed, steps, device):
        if shape.config.n_layers == 2 and task.name == "corpus":
            raise RuntimeError("out of memory (simulated)")
        return real(setting, shape, task, seed, steps, device)

    monkeypatch.setattr(dvw, "train_one", flaky)
    out = tmp_path / "r.json"
    records = dvw.run_experiment(setting, "cpu", str(out), log=lambda s: None)
    assert dvw.load_results(str(out)) == json.loads(json.dumps(records))
    runs = [r for r in records if r["record"] == "train"]
    assert len(runs) == 4 and sum("error" in r for r in runs) == 1
    required = ("task", "n_layers", "d_model", "d_ff", "n_heads", "n_kv_heads", "non_embedding_params", "seed",
                "steps", "tokens", "final_loss", "accuracy", "tokens_per_s", "device")
    for r in runs:
        if "error" not in r:
            assert all(k in r for k in required)
            assert r["tokens"] == 2 * r["batch_size"] * r["seq_len"]
            assert (r["accuracy"] is None) == (r["task"] == "corpus")
    assert sorted(r["n_layers"] for r in records if r["record"] == "latency") == [1, 2]
    assert records[0]["record"] == "meta" and records[0]["steps"] == 2
