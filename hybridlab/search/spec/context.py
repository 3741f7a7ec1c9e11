"""One search spec being read: its problems, the folders it may read from, and the base-model
loads it may still spend on checking space paths."""
from __future__ import annotations

from pathlib import Path

from hybridlab.composer.loader import load_spec
from hybridlab.composer.spec import ModelSpec
from hybridlab.specs.problems import Problems, did_you_mean, joined
from hybridlab.specs.source import SourceMap

#: model fields probed per search spec by loading the base with a sampled value (each probe
#: loads the base once; a space of hostile paths must not cost minutes)
MAX_PATH_PROBES = 64


class Reading:
    """Collects the problems of one file (fields named ``tasks.0.name``), and how to read what
    it names: files only inside ``allowed_roots`` (None: anywhere), plugins only when allowed."""

    def __init__(self, src: SourceMap, allow_plugins: bool = False,
                 allowed_roots: tuple[Path, ...] | None = None):
        self.src = src
        self.file = src.file
        self.problems = Problems(src, field=joined)
        self.allow_plugins = allow_plugins
        self.roots = None if allowed_roots is None else tuple(Path(r).resolve()
                                                              for r in allowed_roots)
        self.probes_left = MAX_PATH_PROBES

    def add(self, path: tuple, message: str, hint: str = "", at_key: bool = False) -> None:
        self.problems.add(path, message, hint, key=at_key)

    def too_many(self, path: tuple, items, limit: int, what: str) -> bool:
        return self.problems.too_many(path, items, limit, what)

    def confined(self, path: Path) -> Path | None:
        """``path`` resolved (symlinks followed) when it lies inside an allowed root (or no roots
        were given), else None."""
        if self.roots is None:
            return path
        try:
            resolved = path.resolve()
        except (OSError, ValueError, RuntimeError):   # a NUL, a loop, a name too long
            return None
        return resolved if any(resolved.is_relative_to(r) for r in self.roots) else None

    def load_model(self, spec, source: str | None = None) -> ModelSpec:
        """``load_spec`` with this reading's permission to import plugins (SpecError)."""
        return load_spec(spec, source=source, allow_plugins=self.allow_plugins)

    def probe(self, spec) -> ModelSpec:
        """``load_model`` to check a space path, counted against ``MAX_PATH_PROBES`` (callers
        stop probing when ``probes_left`` is 0)."""
        self.probes_left -= 1
        return self.load_model(spec)


def suggest(word, options) -> str:
    """The search reader's did-you-mean: names as Python writes them, two equally close ones
    both named, and the known names when none is close."""
    options = [str(o) for o in options]
    return did_you_mean(word, options, listing="known: " + ", ".join(options), quote=repr,
                        ties=True)
