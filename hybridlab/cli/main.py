"""Entry point of the `hybridlab` command.

Each sub-command lives in its own module ``hybridlab/cli/<name>.py`` exposing
``register(subparsers)``, which adds its parser and sets ``func`` (args -> exit code).
Every user error (``hybridlab.errors.UserError``: a bad spec, setting, database or export folder)
is printed as its message -- specs as ``file:line:col: field: message`` -- with exit 2, never a
traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from hybridlab.errors import SettingError, UserError

COMMANDS = ["validate", "summary", "convert", "train", "search", "studies", "ui",
            "export", "generate", "scale"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridlab",
        description="Design hybrid SSM/attention/MoE models from YAML and search for the best mix.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"hybridlab.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"hybridlab.cli.{name}":
                continue  # command not part of this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SettingError as e:
        print(f"hybridlab: {e}", file=sys.stderr)
        return 2
    except UserError as e:
        for line in e.lines():
            print(line, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
