"""Nothing lost, every damaged input named: writers that replace only their own kind of file or folder, resume
that refuses another model, loaders that name the damaged file, and arguments that cannot be right refused."""

import json
import os
import warnings

import pytest
import torch
from safetensors.torch import save_file

import minids.results as results
from minids import DeepSeekLM, ModelConfig, lora
from minids.checkpoint import CHECKPOINT_NAME, checkpoint_path, save_checkpoint
from minids.files import DamagedFileError, read_json
from minids.train import TrainConfig, train

from conftest import tiny_config

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


def small_model(**overrides):
    return DeepSeekLM(tiny_config(**overrides))


def truncate(path, keep=0.5):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


# ---- data loss: writers replace only what they recognise --------------------------------------------------


def test_save_hf_refuses_a_folder_of_other_files_and_a_regular_file(tmp_path):
    model = small_model()
    notes = tmp_path / "mine"
    notes.mkdir()
    (notes / "notes.txt").write_text("a week of notes")
    with pytest.raises(FileExistsError, match=r"holds 1 entries \(notes.txt\) and is not a model folder.*overwrite=True"):
        model.save_hf(notes)
    assert (notes / "notes.txt").read_text() == "a week of notes"
    a_file = tmp_path / "report.pdf"
    a_file.write_bytes(b"%PDF")
    with pytest.raises(FileExistsError, match="is a file, not a model folder"):
        model.save_hf(a_file)
    assert a_file.read_bytes() == b"%PDF"
    # its own kind is replaced, and overwrite=True replaces anything, as asked
    folder = model.save_hf(tmp_path / "m")
    model.save_hf(folder)
    model.save_hf(notes, overwrite=True)
    assert sorted(os.listdir(notes)) == ["config.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "mine", "report.pdf"]  # nothing left behind


def test_save_adapter_does_not_replace_a_model_folder(tmp_path):
    model = small_model()
    folder = model.save_hf(tmp_path / "base")
    pm = lora.apply_lora(DeepSeekLM(model.config), r=2)
    with pytest.raises(FileExistsError, match="is not a LoRA adapter folder"):
        lora.save_adapter(pm, folder)
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors"]
    adapter = lora.save_adapter(pm, tmp_path / "adapter")
    lora.save_adapter(pm, adapter)  # an adapter folder is replaced
    with pytest.raises(FileExistsError, match="is not a model folder"):
        model.save_hf(adapter)  # and save_hf does not replace an adapter


def test_the_swap_puts_the_old_folder_back_when_the_second_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "model"
    with results.atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("old")
    real_replace, calls = os.replace, []

    def second_fails(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the first moves the old folder aside, the second would move the new one in
            raise OSError("injected: rename failed")
        return real_replace(src, dst)

    monkeypatch.setattr(results.os, "replace", second_fails)
    with pytest.raises(OSError, match="injected"):
        with results.atomic_folder(target) as tmp:
            (tmp / "a.txt").write_text("new")
    monkeypatch.setattr(results.os, "replace", real_replace)
    assert (target / "a.txt").read_text() == "old"  # back in place
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no hidden .old- or .partial- folder left


def test_results_and_checkpoint_writers_refuse_what_is_not_theirs(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not json")
    with pytest.raises(FileExistsError, match="is not a JSON results file"):
        results.write_json_atomic(notes, [1])
    assert notes.read_text() == "not json"
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        results.write_json_atomic(notes / "r.json", [1])
    model = small_model()
    opt, gen = torch.optim.AdamW(model.parameters()), torch.Generator()
    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_file({"x": torch.zeros(2)}, str(folder / CHECKPOINT_NAME))  # a safetensors file, not a checkpoint
    with pytest.raises(FileExistsError, match="is not a minids checkpoint"):
        save_checkpoint(folder, model, opt, gen, step=1)
    with pytest.raises(FileExistsError, match="is a file, not a folder"):
        save_checkpoint(notes, model, opt, gen, step=1)
    save_checkpoint(folder, model, opt, gen, step=1, overwrite=True)
    save_checkpoint(folder, model, opt, gen, step=2)  # its own kind: replaced


def tiny_batches(vocab):
    data = torch.randint(0, vocab, (4, 17), generator=torch.Generator().manual_seed(3))
    return lambda step, g: (data[:, :-1], data[:, 1:])


TC = TrainConfig(steps=2, batch_size=4, seq_len=16, peak_lr=1e-3, warmup_steps=0)


@pytest.mark.parametrize("change", [dict(rope_theta=500000.0), dict(norm_eps=1e-5), dict(sliding_window=8)])
def test_resume_refuses_a_model_of_another_config_before_loading(tmp_path, change):
    train(small_model(), tiny_batches(97), TC, checkpoint_dir=tmp_path, progress=False)
    other = small_model(**change)  # same shapes: loading would succeed and be silently wrong
    before = {k: v.clone() for k, v in other.state_dict().items()}
    rng = torch.get_rng_state()
    field = next(iter(change))
    with pytest.raises(ValueError, match=f"another ModelConfig.*{field}: checkpoint"):
        train(other, tiny_batches(97), TC, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


def test_a_refused_train_config_changes_no_weight_and_no_rng_state(tmp_path):
    train(small_model(), tiny_batches(97), TC, checkpoint_dir=tmp_path, progress=False)
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    with pytest.raises(ValueError, match="peak_lr: checkpoint 0.001 vs now 0.002"):
        train(model, tiny_batches(97), TrainConfig(**{**TC.__dict__, "peak_lr": 2e-3}), checkpoint_dir=tmp_path,
              resume=True, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


def test_resume_that_finds_nothing_says_which_folder(tmp_path):
    missing = tmp_path / "chekpoints"  # a typo
    with pytest.warns(UserWarning, match=f"no checkpoint in {missing}.*no such folder.*step 0"):
        history = train(small_model(), tiny_batches(97), TC, checkpoint_dir=missing, resume=True, progress=False)
    assert history["resumed_from"] is None and len(history["losses"]) == TC.steps


def test_apply_lora_twice_keeps_the_trained_adapter():
    model = small_model()
    pm = lora.apply_lora(model, r=2)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.fill_(0.5)  # "trained"
    trained = {k: v.clone() for k, v in pm.state_dict().items()}
    with pytest.raises(ValueError, match="already carries LoRA adapters"):
        lora.apply_lora(model, r=2)  # the same DeepSeekLM again: a notebook cell run twice
    assert all(torch.equal(trained[k], v) for k, v in pm.state_dict().items())


# ---- wrong results accepted silently -------------------------------------------------------------------


def test_from_hf_uses_the_index_and_refuses_duplicate_tensors(tmp_path):
    model = small_model()
    folder = model.save_hf(tmp_path / "m")
    stray = {"lm_head.weight": torch.zeros_like(model.lm_head.weight)}
    save_file(stray, str(folder / "zz-stray.safetensors"))
    with pytest.raises(ValueError, match="lm_head.weight is stored twice.*zz-stray.safetensors"):
        DeepSeekLM.from_hf(folder)
    names = list(model.to_hf_state_dict())
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {n: "model.safetensors" for n in names}}))
    loaded = DeepSeekLM.from_hf(folder)  # the index names model.safetensors: the stray file is not read
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {**{n: "model.safetensors" for n in names}, "lm_head.weight": "zz-stray.safetensors"}}))
    with pytest.raises(ValueError, match="stored twice"):
        DeepSeekLM.from_hf(folder)


def test_from_hf_refuses_an_integer_tensor(tmp_path):
    model = small_model()
    state = {k: v.contiguous() for k, v in model.to_hf_state_dict().items()}
    state["model.norm.weight"] = state["model.norm.weight"].to(torch.int32)
    folder = tmp_path / "m"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(model.config.to_hf_dict()))
    with pytest.raises(ValueError, match="model.norm.weight .* is stored as I32"):
        DeepSeekLM.from_hf(folder)


@pytest.mark.parametrize("model_type", [None, "llama"])
def test_moe_fields_without_an_moe_model_type_are_refused(model_type):
    hf = tiny_config().to_hf_dict()
    hf.update(n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=32)
    if model_type is None:
        del hf["model_type"]
    else:
        hf["model_type"] = model_type
    with pytest.raises(ValueError, match=f"n_routed_experts=8 but its model_type is {model_type!r}.*'deepseek'"):
        ModelConfig.from_hf(hf)


def test_prefill_chunk_zero_and_infinite_temperature_are_refused():
    from minids.generate import generate
    from minids.rolling_cache import prefill

    model = small_model(sliding_window=4).eval()
    ids = torch.randint(0, 97, (1, 9))
    with pytest.raises(ValueError, match="chunk must be >= 1.*got 0"):
        prefill(model, ids, model.new_kv_cache(1), chunk=0)
    with pytest.raises(ValueError, match="temperature must be a number >= 0, and finite.*inf"):
        generate(model, ids, 2, temperature=float("inf"))


@pytest.fixture(scope="module")
def tok():
    from minids.tokenizer import train_tokenizer

    return train_tokenizer(["hello world, hello tokens 12345 " * 50], n_bpe=300)


def test_tokenizer_refuses_a_string_batch_bad_ids_and_pad_ids_out_of_range(tok):
    with pytest.raises(TypeError, match="encode_batch takes a list of strings, got str.*pass \\[text\\]"):
        tok.encode_batch("a string")
    ids, _ = tok.encode_batch(["a string"])
    assert ids.shape[0] == 1
    for bad in ([1.7, 2.0], ["12", "3"], 123, "hello", torch.tensor([1.5])):
        with pytest.raises(TypeError, match="decode"):
            tok.decode(bad)
    assert tok.decode([int(i) for i in ids[0]]) == "a string"
    for pad in (-5, 99999):
        with pytest.raises(ValueError, match=rf"pad_id must be a token id, an int in \[0, {tok.vocab_size}\), got {pad}"):
            tok.encode_batch(["a", "bb"], pad_id=pad)


# ---- experiment command lines --------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--workers", "0"], ["--steps", "-5"], ["--seeds"], ["--seeds", "-1"]])
def test_hop_depth_usage_errors_write_nothing(tmp_path, args, capsys):
    from minids.experiments import hop_depth

    with pytest.raises(SystemExit) as exit:
        hop_depth.main(["--out", str(tmp_path), *args])
    assert exit.value.code == 2 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["--seeds", "0"], ["--steps", "-5"]])
def test_depth_vs_width_usage_errors_write_nothing(tmp_path, args):
    from minids.experiments import depth_vs_width

    with pytest.raises(SystemExit) as exit:
        depth_vs_width.main(["--out", str(tmp_path), *args])
    assert exit.value.code == 2 and list(tmp_path.iterdir()) == []


def test_moe_vs_dense_and_finetune_usage_errors(tmp_path):
    from minids.experiments import finetune, moe_vs_dense

    for main, args in ((moe_vs_dense.main, ["tiny", "--seeds", ",", "--results", str(tmp_path / "r.json")]),
                       (moe_vs_dense.main, ["tiny", "--workers", "0", "--results", str(tmp_path / "r.json")]),
                       (finetune.main, ["--out", str(tmp_path), "--workers", "0"]),
                       (finetune.main, ["--out", str(tmp_path), "--ft-steps", "-5"])):
        with pytest.raises(SystemExit) as exit:
            main(args)
        assert exit.value.code == 2
    assert list(tmp_path.iterdir()) == []


def test_an_output_path_under_a_regular_file_fails_before_any_work(tmp_path, monkeypatch, capsys):
    from minids.experiments import depth_vs_width

    blocker = tmp_path / "results"
    blocker.write_text("a file where the folder should be")

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(depth_vs_width, "run_experiment", no_training)
    with pytest.raises(SystemExit) as exit:
        depth_vs_width.main(["--out", str(blocker / "sub"), "--quick"])
    assert exit.value.code == 2 and "is a file, not a folder" in capsys.readouterr().err


def test_depth_vs_width_quick_takes_steps(monkeypatch):
    from minids.experiments import depth_vs_width

    seen = {}
    monkeypatch.setattr(depth_vs_width, "run_experiment", lambda setting, *a, **k: seen.update(setting=setting))
    depth_vs_width.main(["--quick", "--steps", "3"])
    assert seen["setting"].steps == 3 and seen["setting"].seeds == (0,)


def test_merge_refuses_another_experiments_file(tmp_path, capsys):
    from minids.experiments import hop_depth, norm_placement

    foreign = tmp_path / "hop_k_cpu.json"
    foreign.write_text(json.dumps([{"record": "meta", "setting": {"budget_s": 10, "corpus_eval_windows": 4}},
                                   {"record": "latency", "shape": "L2"}]))
    before = foreign.read_text()
    with pytest.raises(SystemExit):
        hop_depth.main(["--out", str(tmp_path), "--merge"])
    assert "another experiment" in capsys.readouterr().err and foreign.read_text() == before
    foreign.write_text(json.dumps({"meta": {}}))  # a file of another shape
    with pytest.raises(SystemExit):
        hop_depth.main(["--out", str(tmp_path), "--merge"])
    assert "does not hold a list of records" in capsys.readouterr().err
    foreign.write_text('[{"record": "meta", "sett')  # cut short
    with pytest.raises(SystemExit):
        hop_depth.main(["--out", str(tmp_path), "--merge"])
    assert f"{foreign} is not valid JSON" in capsys.readouterr().err
    np_file = tmp_path / "np.json"
    np_file.write_text(json.dumps([{"record": "train", "n_layers": 4, "seed": 0}]))
    for extra in (["--merge"], []):
        with pytest.raises(ValueError, match="norm_placement did not write"):
            norm_placement.main(["--out", str(np_file), "--quick", *extra])
    assert json.loads(np_file.read_text()) == [{"record": "train", "n_layers": 4, "seed": 0}]


def test_finetune_merge_refuses_a_file_of_another_shape(tmp_path):
    from minids.experiments import finetune

    (tmp_path / "finetune_cpu.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="is not a finetune results file"):
        finetune.run_experiment(finetune.SETTINGS["cpu"], out_path=str(tmp_path / "finetune_cpu.json"), merge=True)


# ---- errors that name the file -------------------------------------------------------------------------


def test_damaged_model_files_are_named(tmp_path):
    model = small_model()
    folder = model.save_hf(tmp_path / "m")
    weights = folder / "model.safetensors"
    good = weights.read_bytes()
    truncate(weights)
    with pytest.raises(DamagedFileError, match=f"{weights} is not a complete safetensors file.*cut short"):
        DeepSeekLM.from_hf(folder)
    weights.write_bytes(b"")
    with pytest.raises(DamagedFileError, match=rf"{weights} is empty \(0 bytes\)"):
        DeepSeekLM.from_hf(folder)
    weights.write_bytes(good)
    config = folder / "config.json"
    text = config.read_text()
    config.write_text(text[: len(text) // 2])
    with pytest.raises(DamagedFileError, match=f"{config} is not valid JSON.*cut short"):
        DeepSeekLM.from_hf(folder)
    config.write_text("[1, 2]")
    with pytest.raises(DamagedFileError, match=r"holds a JSON list .*but a model config.json is a JSON object"):
        DeepSeekLM.from_hf(folder)
    hf = json.loads(text)
    config.write_text(json.dumps({**hf, "rope_scaling": "linear"}))
    with pytest.raises(ValueError, match="rope_scaling must be null or an object.*'linear'"):
        DeepSeekLM.from_hf(folder)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        DeepSeekLM.from_hf(tmp_path / "nowhere")


def test_damaged_shard_adapter_checkpoint_and_tokenizer_are_named(tmp_path, tok):
    model = small_model()
    pm = lora.apply_lora(DeepSeekLM(model.config), r=2)
    adapter = lora.save_adapter(pm, tmp_path / "adapter")
    truncate(adapter / "adapter_model.safetensors")
    with pytest.raises(DamagedFileError, match="adapter_model.safetensors is not a complete safetensors file"):
        lora.load_adapter(DeepSeekLM(model.config), adapter)
    (adapter / "adapter_config.json").write_text('{"peft_type": "LO')
    with pytest.raises(DamagedFileError, match="adapter_config.json is not valid JSON"):
        lora.load_adapter(DeepSeekLM(model.config), adapter)
    train(small_model(), tiny_batches(97), TC, checkpoint_dir=tmp_path / "ck", progress=False)
    truncate(checkpoint_path(tmp_path / "ck"))
    with pytest.raises(DamagedFileError, match=f"{CHECKPOINT_NAME} is not a complete safetensors file"):
        train(small_model(), tiny_batches(97), TC, checkpoint_dir=tmp_path / "ck", resume=True, progress=False)
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    truncate(path)
    from minids.tokenizer import Tokenizer

    with pytest.raises(DamagedFileError, match="tokenizer.json is not valid JSON"):
        Tokenizer.from_file(path)
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(DamagedFileError, match="empty.json is empty"):
        read_json(tmp_path / "empty.json")


def test_save_hf_takes_a_dtype_name_and_a_tokenizer_path(tmp_path, tok):
    model = DeepSeekLM(tiny_config(vocab_size=tok.vocab_size))
    tok.save(tmp_path / "tok" / "tokenizer.json")
    folder = model.save_hf(tmp_path / "m", tokenizer=str(tmp_path / "tok"), dtype="bfloat16")
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    assert (folder / "tokenizer.json").is_file()
    with pytest.raises(ValueError, match="dtype 'bfloat17' is not a torch dtype"):
        model.save_hf(folder, dtype="bfloat17")
    with pytest.raises(ValueError, match="floating torch dtype"):
        model.save_hf(folder, dtype=torch.int8)
    with pytest.raises(TypeError, match="tokenizer must be None, a minids Tokenizer or the path"):
        model.save_hf(folder, tokenizer=42)


def test_deepseek_moe_names_what_is_wrong_with_its_input():
    from minids.moe import DeepSeekMoE

    cfg = tiny_config(n_routed_experts=4, n_experts_per_token=2, moe_d_ff=16)
    moe = DeepSeekMoE(cfg)
    d = cfg.d_model
    with pytest.raises(ValueError, match=r"shape \(batch, seq, d_model=64\), got \(5, 64\).*x\[None\]"):
        moe(torch.randn(5, d))
    with pytest.raises(ValueError, match=r"got \(1, 5, 32\)"):
        moe(torch.randn(1, 5, 32))
    with pytest.raises(TypeError, match="input dtype torch.float64 differs from the weights' torch.float32"):
        moe(torch.randn(1, 5, d, dtype=torch.float64))
    with pytest.raises(ValueError, match="has no tokens"):
        moe(torch.randn(1, 0, d))
    assert moe(torch.randn(2, 3, d)).shape == (2, 3, d)


def test_moe_vs_dense_keeps_a_file_of_another_setting_or_experiment(tmp_path):
    from minids.experiments import moe_vs_dense

    path = tmp_path / "moe.json"
    other = {"record": "moe_vs_dense", "setting": {"steps": 1}, "runs": [{"variant": "dense", "seed": 0}]}
    for content, message in ((other, "holds runs of another setting"), ([1, 2], "not a moe_vs_dense results file")):
        path.write_text(json.dumps(content))
        with pytest.raises(ValueError, match=message):
            moe_vs_dense.run(moe_vs_dense.SETTINGS["tiny"], ["active"], "cpu", str(path), 10.0, 0.0)
        assert json.loads(path.read_text()) == content


def test_a_damaged_results_file_is_named_when_a_chapter_reads_it(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('[{"record": "meta", "steps": 1')
    with pytest.raises(DamagedFileError, match=f"{path} is not valid JSON at line 1.*cut short"):
        results.read_results(path, "python -m minids.experiments.x")


def test_norm_placement_merge_on_a_truncated_file_names_it(tmp_path, capsys):
    from minids.experiments import norm_placement

    path = tmp_path / "np.json"
    path.write_text('[{"metric": "stream_rms", "val')
    with pytest.raises(SystemExit):
        norm_placement.main(["--out", str(path), "--quick", "--merge"])
    assert f"--merge: {path} is not valid JSON" in capsys.readouterr().err
    assert path.read_text() == '[{"metric": "stream_rms", "val'


def test_isoflop_and_miniature_refuse_bad_arguments_before_any_work(tmp_path, monkeypatch, capsys):
    from minids.experiments import isoflop, miniature

    for args in (["--seeds", "-1"], ["--budgets", "0"], ["--min-steps", "0"]):
        with pytest.raises(SystemExit) as exit:
            isoflop.main(["--quick", "--out", str(tmp_path), *args])
        assert exit.value.code == 2
    monkeypatch.setattr(miniature, "pretrain", lambda *a, **k: pytest.fail("training started"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("notes")
    with pytest.raises(SystemExit) as exit:
        miniature.main(["tiny", "--out", str(mine), "--results", str(tmp_path / "r.json")])
    assert exit.value.code == 2 and "is not a model folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_tokenizer_save_replaces_only_a_tokenizer_file(tmp_path, tok):
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    tok.save(path)  # its own kind: replaced
    notes = tmp_path / "notes.json"
    notes.write_text('{"todo": 1}')
    with pytest.raises(FileExistsError, match="notes.json exists and is not a tokenizer file"):
        tok.save(notes)
    assert notes.read_text() == '{"todo": 1}'  # nothing lost
    tok.save(notes, overwrite=True)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        tok.save(tmp_path)
