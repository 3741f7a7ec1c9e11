"""Every path a caller of the web UI names goes through here: it is resolved (symlinks too) and
must land inside an allowed root -- the folder the UI was started in, or the shipped examples.

    roots = Roots([Path.cwd(), shipped_examples()])
    path, text = roots.read_spec("specs/search.yaml")     # or raises PathRefused

Whatever is refused (outside the roots, missing, a folder, a device such as /dev/zero, a symlink
out of a root, not ``.yaml``) gets one message, so a caller learns nothing about files it may
not read -- not even whether they exist. Spec text is at most ``MAX_SPEC_BYTES``, from a file
or from the browser.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from hybridlab.errors import UserError
from hybridlab.formatting import shown_name

#: The largest spec, as a file or as text sent from the page.
MAX_SPEC_BYTES = 1 << 20
#: The longest path string worth looking at (longer ones are refused unread).
MAX_PATH_CHARS = 4096
SPEC_SUFFIXES = (".yaml", ".yml")


class PathRefused(UserError):
    """A path outside the allowed roots, or no readable spec file inside them."""


class SpecTooLarge(UserError):
    """Spec text (a file or the editor) over ``MAX_SPEC_BYTES``."""


def shipped_examples() -> Path:
    """The example specs that come with hybridlab (beside the package in a checkout)."""
    return Path(__file__).resolve().parents[2] / "examples"


def quoted(value, limit: int = 80) -> str:
    """A caller's value for an error message: in quotes, control characters escaped, cut to
    ``limit`` characters."""
    text = shown_name(value)
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return f"'{text}'"


def check_text_size(text: str, what: str = "the spec") -> None:
    """Raise ``SpecTooLarge`` for text over ``MAX_SPEC_BYTES`` (UTF-8)."""
    # a str's length bounds its UTF-8 size from below: the encode is only paid near the limit
    if len(text) > MAX_SPEC_BYTES or (len(text) * 4 > MAX_SPEC_BYTES
                                      and len(text.encode("utf-8", "replace")) > MAX_SPEC_BYTES):
        raise SpecTooLarge(f"{what} is larger than {MAX_SPEC_BYTES // (1 << 20)} MiB; a spec "
                           f"this size is not a layer pattern -- shorten it")


class Roots:
    """The folders the page may read from."""

    def __init__(self, roots):
        resolved: list[Path] = []
        for r in roots:
            p = Path(r).resolve()
            if p not in resolved:
                resolved.append(p)
        self.roots = tuple(resolved)

    def __repr__(self) -> str:
        return f"Roots({[str(r) for r in self.roots]})"

    def describe(self) -> str:
        return " and ".join(shown_name(r) for r in self.roots)

    def contains(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` (resolved, symlinks followed) lies inside a root."""
        try:
            real = Path(os.path.realpath(path))
        except (OSError, ValueError, RuntimeError):
            return False
        return any(real == r or real.is_relative_to(r) for r in self.roots)

    def refused(self, raw) -> PathRefused:
        return PathRefused(f"cannot open {quoted(raw)}: this page opens only .yaml spec files "
                           f"inside {self.describe()}; give a path to one of those")

    def resolve(self, raw, *, relative_to: str | os.PathLike | None = None) -> Path:
        """The resolved path of ``raw`` (relative paths from ``relative_to``, default: the first
        root), or ``PathRefused`` when it is not inside a root."""
        if not isinstance(raw, (str, os.PathLike)) or not str(raw).strip() \
                or len(str(raw)) > MAX_PATH_CHARS or "\x00" in str(raw):
            raise self.refused(raw)
        try:
            p = Path(str(raw).strip()).expanduser()
            if not p.is_absolute():
                p = Path(relative_to or self.roots[0]) / p
            real = Path(os.path.realpath(p))
        except (OSError, ValueError, RuntimeError):
            raise self.refused(raw) from None
        if not any(real == r or real.is_relative_to(r) for r in self.roots):
            raise self.refused(raw)
        return real

    def read_spec(self, raw, *, relative_to: str | os.PathLike | None = None) -> tuple[Path, str]:
        """(resolved path, text) of a ``.yaml`` spec file inside a root. Everything that is not
        a readable regular file there is ``PathRefused`` with the same message; a file that is
        too large or not UTF-8 gets its own message (it is inside a root, so saying so leaks
        nothing), which never quotes its contents."""
        path = self.resolve(raw, relative_to=relative_to)
        if path.suffix.lower() not in SPEC_SUFFIXES:
            raise self.refused(raw)
        try:
            # O_NOFOLLOW: the path was just resolved, a symlink now means it was swapped;
            # O_NONBLOCK: a FIFO must not hang the server (it is refused below)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                         | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            raise self.refused(raw) from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):           # a folder, a FIFO, a device
            os.close(fd)
            raise self.refused(raw)
        with os.fdopen(fd, "rb") as f:
            if info.st_size > MAX_SPEC_BYTES:
                raise SpecTooLarge(f"{quoted(raw)} is {info.st_size:,} bytes; a spec file may "
                                   f"be at most {MAX_SPEC_BYTES // (1 << 20)} MiB")
            data = f.read(MAX_SPEC_BYTES + 1)
        if len(data) > MAX_SPEC_BYTES:       # grew after the stat
            raise SpecTooLarge(f"{quoted(raw)} is larger than {MAX_SPEC_BYTES // (1 << 20)} "
                               f"MiB; a spec file may be at most that")
        try:
            return path, data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise PathRefused(f"cannot open {quoted(raw)}: it is not a UTF-8 text file, so not "
                              f"a spec") from None
