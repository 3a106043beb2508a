"""minids.source.show_source: a whole object, one method, a line range, a named region; clear errors."""

import inspect

import pytest

import minids
from minids.attention import GroupedQueryAttention, einsum_attention
from minids.source import regions, select_lines, show_source


def shown(capsys, *args, **kwargs) -> list[str]:
    show_source(*args, **kwargs)  # no IPython kernel under pytest: printed as plain text
    return capsys.readouterr().out.splitlines()


def test_whole_function_and_method_are_their_source(capsys):
    out = shown(capsys, einsum_attention)
    assert out[0].startswith("# minids/attention.py, line ")
    assert out[1:] == inspect.getsource(einsum_attention).rstrip().splitlines()
    out = shown(capsys, GroupedQueryAttention, "forward")
    assert out[1:] == inspect.getsource(GroupedQueryAttention.forward).rstrip().splitlines()


def test_lines_are_counted_from_the_objects_first_line(capsys):
    src = inspect.getsource(GroupedQueryAttention.forward).splitlines()
    first = inspect.getsourcelines(GroupedQueryAttention.forward)[1]
    out = shown(capsys, GroupedQueryAttention, "forward", lines=(2, 4))
    assert out[1:] == src[1:4]
    assert f"lines {first + 1}-{first + 3}" in out[0] and "lines 2-4 of" in out[0]


@pytest.mark.parametrize("bad", [(0, 3), (3, 2), (1, 10_000), [1, 2], (1.0, 2)])
def test_lines_out_of_range_or_malformed_are_refused(bad):
    with pytest.raises(ValueError, match="lines"):
        show_source(GroupedQueryAttention, "forward", lines=bad)


def test_readable_region_of_attention_is_the_einsum_path(capsys):
    out = "\n".join(shown(capsys, GroupedQueryAttention, "forward", region="readable"))
    # the explicit path is there ...
    for piece in ("self.q_proj(x)", "apply_rope", 'repeat(k, "b k s d -> b (k r) s d"', "einsum_attention(",
                  "self.o_proj"):
        assert piece in out, piece
    # ... and the branches taught later are not, each gap named by one comment with its file lines
    for piece in ("flex_window_attention", "decode_attention", "scaled_dot_product_attention", "_windowed",
                  "# region", "# endregion"):
        assert piece not in out, piece
    assert out.count("not shown") == 3  # signature + window branch, the fast branches, the SDPA branches


def test_region_pieces_and_gaps():
    lines = ["def f(x):\n", "    # region: a\n", "    y = x\n", "    # endregion\n", "    z = 1\n",
             "    # region: a note after the name\n", "    return y\n", "    # endregion\n"]
    assert regions(lines) == {"a": [(3, 3), (7, 7)]}
    text = select_lines(lines, 10, regions(lines)["a"])
    assert text.splitlines() == ["# ... lines 10-11 not shown", "    y = x", "    # ... lines 13-15 not shown",
                                 "    return y"]


@pytest.mark.parametrize("lines, message", [
    (["    # region: a\n", "    # region: b\n", "    # endregion\n"], "do not nest"),
    (["    # region: a\n", "    x = 1\n"], "never closed"),
    (["    x = 1\n", "    # endregion\n"], "without"),
])
def test_malformed_regions_are_refused(lines, message):
    with pytest.raises(ValueError, match=message):
        regions(lines)


def test_unknown_region_names_the_ones_there():
    with pytest.raises(ValueError, match="'readable'"):
        show_source(GroupedQueryAttention, "forward", region="fast")
    with pytest.raises(ValueError, match="none"):
        show_source(einsum_attention, region="readable")
    with pytest.raises(ValueError, match="not both"):
        show_source(GroupedQueryAttention, "forward", lines=(1, 2), region="readable")
    with pytest.raises(AttributeError, match="forwrd"):
        show_source(GroupedQueryAttention, "forwrd")


def test_properties_show_their_getter(capsys):
    out = shown(capsys, minids.GroupedQueryAttention, "impl")
    assert any("def impl" in line for line in out)
