"""Ratio layouts: "10 mixer layers, Mamba:attention = 4:1, spread evenly, an MLP after each".

A ``Layout`` expands to one block name per layer (and from there to a pattern string):

1. **Counts.** ``layers * weight / sum(weights)`` per mixer, rounded with the largest-remainder
   method so the counts sum to ``layers``: every mixer gets the floor of its quota, and the
   layers left over go to the largest fractional remainders. Ties go to the larger weight, then
   to the mixer listed first in ``mix``. Quotas are exact fractions, so there is no float noise.
2. **Background.** The mixer with the largest weight (first listed on a tie) fills every slot
   the others do not take.
3. **Placement** of the other ("minority") mixers among the mixer slots:
   ``even``   Megatron's allocator: K minority layers split the B background layers into K+1
              sections of B/(K+1); walking the slots with an accumulator that starts at B/(K+1),
              a minority layer goes where it has dropped below 1/2 (then it grows by B/(K+1)),
              otherwise the slot is background and it shrinks by 1. While K < B, minority
              layers never sit at either end. N=10 with 2 attention layers gives
              ``MMM*MM*MMM``. With several minority mixers, the minority slots are dealt out
              so each mixer is spread evenly.
   ``first`` / ``last`` / ``middle``  all minority layers in one run at the start, the end, or
              centred (starting at slot (layers - K) // 2); heavier mixers first.
   ``[i, j, ...]``  explicit 0-based mixer-slot indices for the single minority mixer; their
              number must equal the count from step 1.
4. **FFN.** ``ffn`` names are cycled after each mixer: mixer i is followed by ``ffn[i % len(ffn)]``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from fractions import Fraction

from hybridlab.composer.pattern import format_name

PLACEMENTS = ("even", "first", "last", "middle")


@dataclass(frozen=True)
class Layout:
    layers: int                              # number of mixer layers
    mix: tuple[tuple[str, float], ...]       # (mixer name, relative weight), in spec order
    place: str | tuple[int, ...] = "even"
    ffn: tuple[str, ...] = ()


@dataclass
class LayoutError(Exception):
    message: str
    where: tuple = ()        # path inside `layout`, e.g. ("place", 2)
    hint: str = ""


def mixer_counts(layers: int, mix: tuple[tuple[str, float], ...]) -> dict[str, int]:
    """Largest-remainder rounding of the weights to whole layer counts summing to ``layers``."""
    weights = [(name, Fraction(w)) for name, w in mix]
    total = sum(w for _, w in weights)
    if layers < 1 or total <= 0:
        raise LayoutError("the layout has no layers: `layers` must be >= 1 and some weight > 0",
                          ("mix",) if total <= 0 else ("layers",))
    quotas = [(name, layers * w / total) for name, w in weights]
    counts = {name: int(q) for name, q in quotas}          # floor: quotas are >= 0
    left = layers - sum(counts.values())
    by_remainder = sorted(range(len(quotas)),
                          key=lambda i: (-(quotas[i][1] - int(quotas[i][1])), -weights[i][1], i))
    for i in by_remainder[:left]:
        counts[quotas[i][0]] += 1
    return counts


def mixer_sequence(layout: Layout) -> list[str]:
    """One mixer name per mixer slot."""
    counts = mixer_counts(layout.layers, layout.mix)
    order = sorted(range(len(layout.mix)), key=lambda i: (-Fraction(layout.mix[i][1]), i))
    background = layout.mix[order[0]][0]
    minority = [(layout.mix[i][0], counts[layout.mix[i][0]]) for i in order[1:]
                if counts[layout.mix[i][0]] > 0]
    n_minority = sum(c for _, c in minority)
    slots = _minority_slots(layout, background, minority, n_minority)
    names = [background] * layout.layers
    if layout.place == "even":
        fill = _deal(minority, n_minority)
    else:                                   # one run per mixer, heavier mixers first
        fill = [name for name, count in minority for _ in range(count)]
    for slot, name in zip(slots, fill):
        names[slot] = name
    return names


def expand_layout(layout: Layout) -> list[str]:
    """One block name per layer: each mixer followed by its FFN (if any)."""
    out = []
    for i, mixer in enumerate(mixer_sequence(layout)):
        out.append(mixer)
        if layout.ffn:
            out.append(layout.ffn[i % len(layout.ffn)])
    return out


def layout_pattern(layout: Layout) -> str:
    return "".join(format_name(name) for name in expand_layout(layout))


# -- placement -----------------------------------------------------------------------------------

def _minority_slots(layout: Layout, background: str, minority, k: int) -> list[int]:
    n = layout.layers
    place = layout.place
    if isinstance(place, tuple):
        return _explicit_slots(place, n, background, minority)
    if place == "first":
        return list(range(k))
    if place == "last":
        return list(range(n - k, n))
    if place == "middle":
        start = (n - k) // 2
        return list(range(start, start + k))
    return _even_slots(n, k)


def _even_slots(n: int, k: int) -> list[int]:
    """Megatron's accumulator walk (see module docstring).

    Deliberately in floats, step for step as Megatron does it, so that layouts match Megatron's
    exactly (exact fractions would differ where the accumulator lands on 1/2, e.g. n=16, k=5).
    """
    if k == 0:
        return []
    section = (n - k) / (k + 1)
    x, slots = section, []
    for slot in range(n):
        if x < 0.5:
            slots.append(slot)
            x += section
        else:
            x -= 1
    return slots        # exactly k slots (checked for every n < 200 in tests/test_layout.py)


def _explicit_slots(place: tuple[int, ...], n: int, background: str, minority):
    if len(minority) != 1:
        names = ", ".join(repr(name) for name, _ in minority) or "none"
        raise LayoutError(
            f"an explicit `place` list needs exactly one mixer besides the background "
            f"'{background}', but the weights give {len(minority)} ({names})", ("place",),
            "use place: even|first|last|middle, or write a `pattern`")
    name, count = minority[0]
    for i, slot in enumerate(place):
        if not 0 <= slot < n:
            raise LayoutError(f"mixer index {slot} is out of range 0..{n - 1}", ("place", i))
        if slot in place[:i]:
            raise LayoutError(f"mixer index {slot} is listed twice", ("place", i))
    if len(place) != count:
        raise LayoutError(
            f"`place` lists {len(place)} positions but the weights give '{name}' {count} of "
            f"{n} layers", ("place",),
            f"make the weights match, e.g. mix: {{{yaml_key(background)}: {n - len(place)}, "
            f"{yaml_key(name)}: {len(place)}}}")
    return sorted(place)


def yaml_key(name: str) -> str:
    """A block name as written in YAML: quoted unless it is a plain word."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else json.dumps(name)


def _deal(minority, k: int) -> list[str]:
    """Order in which minority mixers fill the k minority slots: each mixer spread evenly.

    At slot j every mixer is owed ``count * (j + 1) / k`` slots; the one owed most (earliest
    listed on a tie) takes it. Each mixer ends with exactly its count.
    """
    given = {name: 0 for name, _ in minority}
    out = []
    for j in range(k):
        owed = [(Fraction(count * (j + 1), k) - given[name], -i, name)
                for i, (name, count) in enumerate(minority)]
        _, _, pick = max(owed)
        given[pick] += 1
        out.append(pick)
    return out
