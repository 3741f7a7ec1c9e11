"""Options shared by the commands that read specs.

The plugin opt-in lives here, at the command-line edge: ``--allow-plugins`` or
``HYBRIDLAB_PLUGINS=1`` lets a spec's ``plugins:`` be imported (their code runs). The library
never reads the variable, so a web server started with it set still imports nothing.
"""
from __future__ import annotations

import argparse
import os

from hybridlab.errors import SettingError

PLUGINS_ENV = "HYBRIDLAB_PLUGINS"


def add_allow_plugins(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-plugins", action="store_true",
                        help="import the Python modules a spec lists under plugins: (this runs "
                             f"their code); {PLUGINS_ENV}=1 does the same")


def allow_plugins(args: argparse.Namespace) -> bool:
    """True when the person at the keyboard opted in, by flag or environment."""
    return bool(getattr(args, "allow_plugins", False)) or env_allows_plugins()


def env_allows_plugins() -> bool:
    """``HYBRIDLAB_PLUGINS``: unset, empty or 0 -> False; 1 -> True; anything else is an error."""
    value = os.environ.get(PLUGINS_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise SettingError(f"{PLUGINS_ENV}={value!r}: expected 1 (import a spec's plugins) or 0")
