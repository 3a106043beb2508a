"""minids.plots.inference draws chapter 07's figures from the committed files, labelled and with legends."""

import json

import matplotlib

matplotlib.use("Agg")

from minids.paths import project_path  # noqa: E402
from minids.plots.inference import batched_decode_figure, best_decode, miniature_figure  # noqa: E402


def _load(*parts):
    return json.load(open(project_path(*parts)))


def test_miniature_figure_panels_and_legends():
    record, ngram = _load("data", "results", "miniature_cuda.json"), _load("data", "results", "byte_ngram.json")
    outside = {"ngram_order": 7, "all": {"model_bpb": 1.2, "ngram_bpb": 2.5}}
    fig = miniature_figure(record, ngram, outside)
    left, middle, right = fig.axes
    assert "nats per token" in left.get_ylabel() and "bits per byte" in middle.get_ylabel()
    assert all("tokens seen" in ax.get_xlabel() for ax in (left, middle))
    labels = [t.get_text() for t in middle.get_legend().get_texts()]
    assert labels[0] == "the miniature" and labels[1].startswith("byte 4-gram") and labels[2].startswith("byte 7-gram")
    assert [t.get_text() for t in right.get_legend().get_texts()] == ["the miniature", "byte 7-gram"]
    assert len(right.patches) == 4 and right.get_ylabel() == "bits per byte"
    assert len(miniature_figure(record, ngram).axes) == 2  # without the outside record, two panels


def test_batched_decode_figure_labels_both_panels():
    batched = _load("benchmarks", "results", "batched_decode_gpu.json")
    fig = batched_decode_figure(batched)
    left, right = fig.axes
    assert left.get_ylabel() and right.get_ylabel() == "tokens/s at the bandwidth floor"
    assert len(left.get_legend().get_texts()) == 7 and len(right.get_legend().get_texts()) == 6
    assert best_decode(batched, 32, 2048)[1] == 156.6  # the batch-1 MHA figure at 2K context
