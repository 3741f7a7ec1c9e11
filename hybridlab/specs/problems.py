"""Collecting the problems of one spec file, placed by field path, and the words they use.

Both readers (model specs: ``hybridlab.composer.loader``; search specs:
``hybridlab.search.spec.load``) report through a ``Problems`` collector: every problem found, not
just the first, each at the file, line and column of the key or value it is about (from the
file's ``SourceMap``), then raised together as one ``SpecError``.

    problems = Problems(smap)
    problems.add(("blocks", "M", "d_state"), "must be > 0", hint)
    problems.raise_if_any()

A field path is a tuple of mapping keys and list indices. Model specs name it as
``overrides[0].set`` (``dotted``); search specs as ``tasks.0.name`` (``joined``), the same form
their space paths take.
"""
from __future__ import annotations

import difflib
from typing import Callable

from hybridlab.errors import Problem, SpecError
from hybridlab.specs.source import Position, SourceMap

# -- words ---------------------------------------------------------------------------------------


def dotted(path: tuple) -> str:
    """("overrides", 0, "set") -> "overrides[0].set"."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def joined(path: tuple) -> str:
    """("tasks", 0, "name") -> "tasks.0.name"."""
    return ".".join(str(p) for p in path)


def _single_quoted(name: str) -> str:
    return f"'{name}'"


def did_you_mean(word, choices, *, listing: str = "", quote: Callable[[str], str] = _single_quoted,
                 ties: bool = False) -> str:
    """"did you mean 'x'?" for the choice closest to ``word`` (difflib ratio >= 0.6), else
    ``listing``. ``ties``: two equally close choices are both named ("did you mean 'a' or 'b'?");
    ``quote`` writes a name (``repr`` for the search reader's wording)."""
    options = [str(c) for c in choices]
    close = difflib.get_close_matches(str(word), options, n=2 if ties else 1, cutoff=0.6)
    if ties and len(close) == 2 and _ratio(word, close[0]) == _ratio(word, close[1]):
        return f"did you mean {quote(close[0])} or {quote(close[1])}?"
    return f"did you mean {quote(close[0])}?" if close else listing


def _ratio(word, option: str) -> float:
    return difflib.SequenceMatcher(None, str(word), option).ratio()


def with_suggestion(word: str, choices, listing: str) -> str:
    """'did you mean 'x'?' when a choice is close, else the listing of choices."""
    return did_you_mean(word, choices, listing=listing)


def plural(word: str, items) -> str:
    return word if len(items) == 1 else word + "s"


def join_ints(items) -> str:
    return ", ".join(str(i) for i in items)


# -- the collector -------------------------------------------------------------------------------

class Problems:
    """The problems found in one file, in the order found; ``sorted()`` gives file order."""

    def __init__(self, src: SourceMap, field: Callable[[tuple], str] = dotted):
        self.src = src
        self.file = src.file
        self.field = field
        self.items: list[Problem] = []
        self._seen: set[Problem] = set()

    def add(self, path: tuple, message: str, hint: str = "", *, at: Position | None = None,
            key: bool = False) -> None:
        """A problem about the value at ``path`` (``key``: about the key itself; ``at``: a
        position given by the caller, e.g. one character of a pattern string)."""
        pos = at or (self.src.key(path) if key else self.src.value(path))
        self.append(Problem(message, file=self.file, line=pos.line, col=pos.col,
                            field=self.field(path), hint=hint))

    def append(self, problem: Problem) -> None:
        """A problem placed already (another file's, or at a position computed by the caller).
        The same problem twice is kept once (one bad override value is checked per layer)."""
        if problem not in self._seen:
            self._seen.add(problem)
            self.items.append(problem)

    def duplicates(self, wording: Callable[[object], tuple[str, str]]) -> None:
        """One problem per key written twice in one mapping; ``wording(key)`` -> (message, hint)."""
        for dup in self.src.duplicates:
            message, hint = wording(dup.key)
            self.add(dup.path + (dup.key,), message, hint, at=dup.position)

    def too_many(self, path: tuple, items, limit: int, what: str, hint: str = "",
                 key: bool = False) -> bool:
        """Report (and return True) when ``items`` holds more than ``limit`` entries."""
        if len(items) <= limit:
            return False
        self.add(path, f"{len(items)} {what}; the limit is {limit}", hint, key=key)
        return True

    def sorted(self) -> list[Problem]:
        """File order (line, column); problems of other files (a search spec's base) after this
        file's, and problems without a position after those with one, each in the order found."""
        return sorted(self.items, key=lambda p: (p.file != self.file, p.line == 0, p.line, p.col))

    def raise_if_any(self) -> None:
        if self.items:
            raise SpecError(self.sorted())

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)
