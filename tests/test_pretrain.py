"""The pre-training corpus (minids.data.pretrain) and the committed tokenizer trained on it."""

import hashlib
import json
import lzma

import pytest

from minids.data import pretrain
from minids.tokenizer import N_BPE, Tokenizer
from minids.paths import project_path


def test_committed_corpus_matches_its_manifest_and_is_tens_of_mb():
    m = pretrain.pretrain_manifest()
    for split in pretrain.SPLITS:
        entry = m["splits"][split]
        raw = lzma.decompress((pretrain.pretrain_dir() / entry["file"]).read_bytes())
        assert hashlib.sha256(raw).hexdigest() == entry["sha256"] and len(raw) == entry["bytes"]
    assert m["splits"]["train"]["bytes"] > 20e6 and m["splits"]["val"]["files"] > 20
    assert {s["name"] for s in m["sources"]} == {"python", "torch", "numpy", "matplotlib"}
    text = pretrain.pretrain_text("val")
    names = [line[len("# file: "):] for line in text.splitlines() if line.startswith("# file: ")]
    assert len(names) == m["splits"]["val"]["files"]
    assert all(pretrain.zlib.crc32(n.encode()) % pretrain.VAL_MODULUS == 0 for n in names)  # held out by file


def test_build_skips_tests_big_and_non_utf8_files_and_is_deterministic(tmp_path, monkeypatch):
    src = tmp_path / "src"
    (src / "pkg" / "tests").mkdir(parents=True)
    (src / "pkg" / "a.py").write_text("def a():\n    return 1\n")
    (src / "pkg" / "tests" / "test_a.py").write_text("assert True\n")
    (src / "pkg" / "big.py").write_text("x = 1\n" * 100_000)
    (src / "pkg" / "latin1.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))
    for i in range(60):
        (src / "pkg" / f"m{i:02d}.py").write_text(f"VALUE = {i}\n")
    monkeypatch.setattr(pretrain, "_sources", lambda: [("fake", src, "0.0")])
    m1 = pretrain.build_pretrain_corpus(tmp_path / "out1")
    m2 = pretrain.build_pretrain_corpus(tmp_path / "out2")
    assert m1["splits"] == m2["splits"]  # same files, same bytes, same hashes
    assert m1["sources"][0]["files"] == 61 and m1["sources"][0]["skipped"] == 2
    train = lzma.decompress((tmp_path / "out1" / "pretrain.train.txt.xz").read_bytes()).decode()
    assert "assert True" not in train and "# file: fake/pkg/a.py" in train + lzma.decompress(
        (tmp_path / "out1" / "pretrain.val.txt.xz").read_bytes()).decode()
    assert json.loads((tmp_path / "out1" / "manifest.json").read_text())["splits"] == m1["splits"]
    with pytest.raises(ValueError, match="split must be one of"):
        pretrain.pretrain_text("test")


def test_committed_tokenizer_is_deepseek_shaped_and_reads_the_corpus():
    tok = Tokenizer.from_dir(project_path("data", "tokenizer"))
    assert tok.vocab_size == 8064 == 63 * 128 and (tok.bos_id, tok.eos_id) == (N_BPE, N_BPE + 1)
    val = pretrain.pretrain_text("val")[:200_000]
    ids = tok.encode(val)
    assert tok.decode(ids) == val
    assert len(val.encode()) / len(ids) > 3.0  # BPE packs > 3 bytes of source per token (the bytes: 1)
