"""User-facing errors.

Every problem with user input (a spec file, a search spec, a CLI argument) is raised as a
``SpecError`` holding one or more ``Problem``s, each pointing at file, line and column.
The CLI prints them as ``file:line:col: message`` (plus a hint) and exits 2 -- never a traceback.
"""
from __future__ import annotations

from dataclasses import dataclass


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


class SpecError(ValueError):
    """One or more problems found in user input."""

    def __init__(self, problems: list[Problem] | Problem):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        super().__init__("\n".join(p.format() for p in self.problems))


class SettingError(ValueError):
    """A bad value in an environment variable (HYBRIDLAB_*): the CLI prints the message, exits 2."""
