"""User-facing errors.

Every failure a user can cause (a spec file, a search spec, a CLI argument, a database, an export
folder, an environment setting) is raised as a ``UserError``. The CLI prints its message and exits
2 -- never a traceback; the UI shows the same message in the page.

``SpecError`` holds one or more ``Problem``s, each pointing at file, line and column, printed as
``file:line:col: field: message`` (plus a hint). The other kinds carry one message that says what
is wrong, where, and what to do.
"""
from __future__ import annotations

from dataclasses import dataclass


class UserError(Exception):
    """Base of every error whose cause is the user's input or environment (exit 2, no traceback)."""

    def lines(self) -> list[str]:
        """The message as the CLI prints it, one entry per line."""
        return [str(self)]


@dataclass(frozen=True)
class Problem:
    message: str
    file: str = "<spec>"
    line: int = 0          # 1-based; 0 when unknown
    col: int = 0           # 1-based; 0 when unknown
    field: str = ""        # dotted path of the offending field, e.g. "blocks.M.d_state"
    hint: str = ""

    def format(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        what = f"{self.field}: {self.message}" if self.field else self.message
        text = f"{where}: {what}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


class SpecError(UserError, ValueError):
    """One or more problems found in user input."""

    def __init__(self, problems: list[Problem] | Problem):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        super().__init__("\n".join(p.format() for p in self.problems))

    def lines(self) -> list[str]:
        return [p.format() for p in self.problems]


class SettingError(UserError, ValueError):
    """A bad value in an environment variable (HYBRIDLAB_*): the CLI prints the message, exits 2."""


class StoreError(UserError):
    """The database cannot be used as asked: unreadable, corrupt, missing tables, a schema from a
    newer hybridlab, a study that does not exist."""


class ExportError(UserError):
    """An export folder cannot be written or read: it exists, it is a symlink, its weights are
    corrupt or do not match the spec."""
