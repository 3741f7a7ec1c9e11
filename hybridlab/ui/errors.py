"""How failures reach the page: every event handler is wrapped (``guard_app``) so that

* a ``UserError`` (a bad spec, a refused path, a corrupt, missing or newer database, an unknown
  study, an export problem) becomes ``gr.Error`` with its message -- the browser shows it in a
  toast, a ``gradio_client`` caller gets it as ``AppError.message``;
* anything else is printed with its traceback in the server log and reaches the page as one
  generic sentence (an unexpected exception's text may quote data the caller should not see).

Gradio renders a ``gr.Error`` message as (sanitised) HTML, so the message is HTML-escaped and its
lines joined with ``<br>``: the browser shows the text exactly, and API callers get that HTML
(``html.unescape`` gives the plain text back).
"""
from __future__ import annotations

import functools
import html
import sys
import traceback

import gradio as gr

from hybridlab.errors import UserError
from hybridlab.formatting import shown_name

INTERNAL = "the server failed on this request ({}); its log has the details"


def page_message(message: str) -> str:
    """Plain text -> the HTML a ``gr.Error`` toast shows as that text."""
    return "<br>".join(html.escape(line, quote=False) for line in str(message).splitlines())


def page_error(error: UserError) -> gr.Error:
    return gr.Error(page_message("\n".join(error.lines())), duration=None,
                    print_exception=False)


def guard(fn):
    """``fn`` with its failures turned into page errors (see the module docstring)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except UserError as e:
            # one line in the server log, escaped: a caller's text must not drive the terminal
            lines = " | ".join(shown_name(line) for line in e.lines())
            print(f"hybridlab ui: {type(e).__name__}: {lines}", file=sys.stderr)
            raise page_error(e) from None
        except Exception as e:            # noqa: BLE001 -- the log gets it, the page a sentence
            traceback.print_exc()
            raise gr.Error(INTERNAL.format(type(e).__name__), print_exception=False) from None

    wrapper.__hybridlab_guarded__ = True
    return wrapper


def guard_app(demo: gr.Blocks) -> None:
    """Wrap every Python handler of ``demo`` with ``guard`` (once)."""
    for block_fn in demo.fns.values():
        fn = block_fn.fn
        if fn is not None and not getattr(fn, "__hybridlab_guarded__", False):
            block_fn.fn = guard(fn)
