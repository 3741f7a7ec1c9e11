"""Pattern strings: grouping, repeats, stages, long names, and errors with their offsets."""
import pytest

from hybridlab.composer.pattern import MAX_LAYERS, PatternError, expand_pattern, format_name


def names(text: str) -> str:
    return "".join(format_name(slot.name) for slot in expand_pattern(text))


def error(text: str) -> tuple[int, str]:
    with pytest.raises(PatternError) as info:
        expand_pattern(text)
    return info.value.offset, info.value.message


def test_symbols_and_whitespace():
    assert names("M- ME\n *-\t") == "M-ME*-"


def test_groups_repeat_and_nest():
    assert names("(M- ME) x 2") == "M-MEM-ME"
    assert names("((M) x 2 *) x 3") == "MM*MM*MM*"
    assert names("(M*)x2-E") == "M*M*-E"          # the count ends where the digits end
    assert names("(M*) ×2") == "M*M*"
    assert names("(M-)") == "M-"                  # a group without a count appears once


def test_stages_are_numbered():
    slots = expand_pattern("(M-) x 2 | *- | ME")
    assert [s.stage for s in slots] == [0, 0, 0, 0, 1, 1, 2, 2]
    assert [s.stage for s in expand_pattern("(M-|*-) x 2")] == [0, 0, 1, 1, 1, 1, 2, 2]


def test_long_names_in_brackets():
    assert [s.name for s in expand_pattern("M [swa] ([ big_moe ]) x 2")] == [
        "M", "swa", "big_moe", "big_moe"]


def test_offsets_point_at_each_symbol():
    slots = expand_pattern("(M *) x 2 [swa]")
    assert [s.offset for s in slots] == [1, 3, 1, 3, 11]


@pytest.mark.parametrize("text, offset, message", [
    ("((M-) x 2 *-", 0, "unbalanced parentheses: '(' is never closed"),
    ("M-)", 2, "unbalanced parentheses: ')' has no matching '('"),
    ("(M-) x 0", 7, "repeat count must be at least 1, got 0"),
    ("(M-) x -3", 7, "repeat count must be at least 1, got -3"),
    ("(M-) x 1.5", 7, "repeat count must be a whole number, got '1.5'"),
    ("(M-) x", 5, "expected a repeat count after 'x'"),
    ("M 3", 2, "unexpected number '3'"),
    ("M ()", 2, "empty group '()'"),
    ("M [swa", 2, "'[' is never closed"),
    ("M []", 2, "empty block name '[]'"),
    ("M ]", 2, "']' has no matching '['"),
    ("| M", 0, "empty pipeline stage: '|' at the start of the pattern"),
    ("M || M", 3, "empty pipeline stage: '|' right after another '|'"),
    ("M- |", 3, "empty pipeline stage: '|' at the end of the pattern"),
])
def test_errors_carry_the_offset(text, offset, message):
    assert error(text) == (offset, message)


def test_huge_repeats_are_refused_before_expanding():
    offset, message = error("((M-) x 100000) x 100000")
    assert message == f"pattern expands to 20000000000 entries; the limit is {MAX_LAYERS}"
    assert len(expand_pattern(f"(M) x {MAX_LAYERS}")) == MAX_LAYERS
