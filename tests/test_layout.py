"""Ratio layouts: largest-remainder counts, placements, FFN cycling, and layouts in specs."""
from fractions import Fraction

import pytest

from hybridlab.composer.layout import (Layout, LayoutError, _even_slots, layout_pattern,
                                       mixer_counts)
from hybridlab.composer.loader import load_spec
from hybridlab.errors import SpecError


def test_megatron_example_n10_r02():
    # Megatron's allocator example: 10 layers, attention ratio 0.2 -> MMM*MM*MMM
    assert layout_pattern(Layout(10, (("M", 8), ("*", 2)))) == "MMM*MM*MMM"
    assert layout_pattern(Layout(10, (("M", 0.8), ("*", 0.2)))) == "MMM*MM*MMM"


def test_even_puts_each_minority_layer_after_its_share_of_the_background():
    """Independent of the walk: K minority layers cut B background layers into K+1 sections of
    s = B/(K+1), so the j-th minority layer follows round(j*s) background layers (exact
    arithmetic). Where j*s is exactly a half, Megatron's float accumulator decides, so either
    neighbour is right."""
    for n in range(1, 120):
        for k in range(0, n + 1):
            s = Fraction(n - k, k + 1)
            slots = _even_slots(n, k)
            assert len(slots) == k, (n, k)
            for j, slot in enumerate(slots, start=1):
                before = slot - (j - 1)                      # background layers before it
                target = j * s
                if (target + Fraction(1, 2)).denominator == 1:       # a tie: round either way
                    assert before in (target - Fraction(1, 2), target + Fraction(1, 2)), (n, k, j)
                else:
                    assert before == round(target), (n, k, j)


def test_even_matches_megatron_layouts():
    # NVIDIA's 8B Mamba-2 hybrid (56 layers, 4 attention): the attention layers of its published
    # hybrid_override_pattern "M-M-M--M-M*-M-M-M-M--M*-M-M-M-M-M*--M-M-M-M-M*-M--M-M-M-"
    pattern = layout_pattern(Layout(56, (("M", 52), ("*", 4))))
    assert [i for i, c in enumerate(pattern) if c == "*"] == [10, 22, 33, 45]
    # Ties (j*s exactly a half), as Megatron-LM's allocate_layers(n, k / n, 0) places them:
    # its float accumulator puts the third layer one slot early (7 and 11; exact rounding: 8, 12)
    assert layout_pattern(Layout(16, (("M", 11), ("*", 5)))) == "MM*MM*M*MM*MM*MM"
    assert layout_pattern(Layout(24, (("M", 19), ("*", 5)))) == "MMM*MMM*MMM*MMMM*MMM*MMM"


def test_even_places_exactly_k_and_never_at_the_ends():
    for n in range(1, 200):
        for k in range(0, n + 1):
            slots = _even_slots(n, k)
            assert len(slots) == k and slots == sorted(set(slots))
            if 0 < k < n - k:
                assert slots[0] != 0 and slots[-1] != n - 1


def test_largest_remainder_counts_and_ties():
    assert mixer_counts(10, (("M", 7), ("*", 1))) == {"M": 9, "*": 1}      # 8.75 / 1.25
    assert mixer_counts(5, (("M", 1), ("*", 1))) == {"M": 3, "*": 2}       # tie: listed first
    assert mixer_counts(5, (("*", 1), ("M", 1))) == {"*": 3, "M": 2}
    # equal remainders (0.5 each): the larger weight wins the leftover layer
    assert mixer_counts(3, (("A", 1), ("B", 3))) == {"A": 1, "B": 2}
    assert mixer_counts(7, (("M", 1), ("*", 1), ("S", 1))) == {"M": 3, "*": 2, "S": 2}
    assert mixer_counts(4, (("M", 3), ("*", 1), ("S", 0))) == {"M": 3, "*": 1, "S": 0}
    for layers in range(1, 50):
        counts = mixer_counts(layers, (("M", 5), ("*", Fraction(3, 2)), ("S", 0.7)))
        assert sum(counts.values()) == layers


def test_placements():
    mix = (("M", 6), ("*", 2), ("S", 1))
    assert layout_pattern(Layout(12, mix, "first")) == "***SMMMMMMMM"
    assert layout_pattern(Layout(12, mix, "last")) == "MMMMMMMM***S"
    assert layout_pattern(Layout(12, mix, "middle")) == "MMMM***SMMMM"
    assert layout_pattern(Layout(8, (("M", 3), ("*", 1)), (1, 5))) == "M*MMM*MM"


def test_several_minority_mixers_are_dealt_evenly():
    pattern = layout_pattern(Layout(12, (("M", 8), ("*", 2), ("S", 2))))
    assert pattern == "MM*MSMM*MSMM"               # 4 evenly spread slots: * S * S
    # 6:2:1 of 12 -> quotas 8, 2.67, 1.33 -> 8 M, 3 *, 1 S; S lands between the *s
    assert mixer_counts(12, (("M", 6), ("*", 2), ("S", 1))) == {"M": 8, "*": 3, "S": 1}
    assert layout_pattern(Layout(12, (("M", 6), ("*", 2), ("S", 1)))).replace("M", "") == "**S*"


def test_ffn_names_cycle_after_each_mixer():
    assert layout_pattern(Layout(4, (("M", 3), ("*", 1)), "last", ("-", "E"))) == "M-MEM-*E"
    assert layout_pattern(Layout(3, (("mamba", 1),), "even", ("moe",))) == \
        "[mamba][moe][mamba][moe][mamba][moe]"


@pytest.mark.parametrize("layout, where, message", [
    (Layout(8, (("M", 3), ("*", 1)), (1, 4, 6)), ("place",),
     "`place` lists 3 positions but the weights give '*' 2 of 8 layers"),
    (Layout(8, (("M", 3), ("*", 1)), (1, 8)), ("place", 1), "mixer index 8 is out of range 0..7"),
    (Layout(8, (("M", 3), ("*", 1)), (1, 1)), ("place", 1), "mixer index 1 is listed twice"),
    (Layout(8, (("M", 2), ("*", 1), ("S", 1)), (1, 5)), ("place",),
     "an explicit `place` list needs exactly one mixer besides the background 'M', but the "
     "weights give 2 ('*', 'S')"),
    (Layout(8, (("M", 0), ("*", 0))), ("mix",),
     "the layout has no layers: `layers` must be >= 1 and some weight > 0"),
])
def test_layout_errors(layout, where, message):
    with pytest.raises(LayoutError) as info:
        layout_pattern(layout)
    assert (info.value.where, info.value.message) == (where, message)


# -- layouts inside specs (real blocks) ------------------------------------------------------

def spec_with(layout: dict):
    return load_spec({"model": {"d_model": 64, "vocab_size": 16}, "layout": layout})


def test_layout_spec_expands_to_pattern_with_ffn():
    spec = spec_with({"layers": 10, "mix": {"M": 8, "*": 2}, "ffn": ["-", "E"]})
    assert spec.pattern == "M-MEM-*EM-ME*-MEM-ME"        # MMM*MM*MMM, then - E - E ...
    assert len(spec.layers) == 20
    assert [layer.type for layer in spec.layers[:2]] == ["mamba2", "mlp"]


def test_layout_defaults_even_and_no_ffn():
    assert spec_with({"layers": 5, "mix": {"M": 4, "*": 1}}).pattern == "MM*MM"


def test_layout_overrides_index_expanded_layers():
    spec = load_spec({"model": {"d_model": 64, "vocab_size": 16},
                      "layout": {"layers": 4, "mix": {"M": 3, "*": 1}, "place": "first",
                                 "ffn": ["-"]},
                      "overrides": [{"at": [0], "set": {"window": 16}},
                                    {"at": [2], "set": {"d_state": 32}}]})
    assert spec.pattern == "*-M-M-M-"
    assert spec.layers[0].config.window == 16 and spec.layers[2].config.d_state == 32


def test_layout_spec_errors_point_into_layout():
    text = ("model: {d_model: 64, vocab_size: 16}\n"
            "layout:\n"
            "  layers: 0\n"
            "  mix: {M: 3, '*': -1, Q: 1}\n"
            "  place: evn\n"
            "  ffn: '-'\n"
            "  extra: 1\n")
    with pytest.raises(SpecError) as info:
        load_spec(text)
    got = [p.format().split("\n")[0] for p in info.value.problems]
    assert got == [
        "<text>:3:11: layout.layers: the layout has no layers: layers must be >= 1",
        "<text>:4:20: layout.mix.*: a weight must be a number >= 0, got integer -1",
        "<text>:4:24: layout.mix.Q: block 'Q' is not defined",
        "<text>:5:10: layout.place: unknown placement 'evn'",
        "<text>:6:8: layout.ffn: ffn must be a list of FFN block names (or []), got string '-'",
        "<text>:7:3: layout.extra: unknown key 'extra' in layout",
    ]
