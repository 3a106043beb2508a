"""Chapter 14's figures: labelled axes, one line per measured series, legends that name them."""

import matplotlib

matplotlib.use("Agg")

from minids.plots.mla import plot_cache_per_token, plot_decode_and_quality  # noqa: E402


def test_cache_bars_are_labelled():
    fig = plot_cache_per_token({"67B (GQA)": 389120, "V3 (MLA)": 70272})
    ax = fig.axes[0]
    assert "KiB" in ax.get_xlabel() and len(ax.patches) == 2
    assert [t.get_text() for t in ax.get_yticklabels()] == ["67B (GQA)", "V3 (MLA)"]


def test_decode_and_quality_panels():
    points = [{"variant": v, "batch": 64, "context": c, "seconds": 1e-4 * c / 1024, "floor_s": 5e-5 * c / 1024}
              for v in ("MHA", "MLA absorbed", "MLA decompressed") for c in (1024, 4096)]
    runs = [{"variant": v, "status": "done", "attention": v, "kv_bytes_per_token_bf16": kv,
             "final": {"val_bpb": 1.0 + 0.01 * s}} for v, kv in (("mha", 6144), ("mla", 1728)) for s in range(3)]
    fig = plot_decode_and_quality({"points": points, "device_name": "GPU"}, {"runs": runs})
    left, right = fig.axes
    assert "µs" in left.get_ylabel() and "context" in left.get_xlabel()
    assert len(left.get_lines()) == 5  # 3 measured + 2 floors (decompressed shares absorbed's floor)
    assert len(left.get_legend().get_texts()) == 5
    assert "bits per byte" in right.get_ylabel() and "bytes" in right.get_xlabel()
    assert len(right.get_legend().get_texts()) == 2
