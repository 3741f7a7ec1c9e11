"""Stopping on Ctrl-C / SIGTERM without tearing a database write in half.

Inside ``stop_on_signals()`` the first SIGINT or SIGTERM raises KeyboardInterrupt; later ones are
ignored, so they cannot cut short the recording of the interrupted trial. A signal that arrives
inside ``deferred()`` (a Store write, Optuna's bookkeeping around a trial) takes effect when the
outermost such block ends, so a trial is never left half-recorded (Optuna RUNNING, our run row
'running'). ``immediate()`` re-opens a deferred region where interrupting at once is safe and
wanted (the training of a trial). Outside ``stop_on_signals()`` these blocks change nothing.

A KeyboardInterrupt raised by a signal handler can also be swallowed: Python ignores exceptions
from finalizers and weakref callbacks (SQLAlchemy's), and one that lands there is printed as
"Exception ignored" and lost. So the stop is also a flag, ``stop_requested()``, that the search
loop and the trainer poll: they stop at their next check either way.
"""
from __future__ import annotations

import contextlib
import signal
import threading

_stopping = False       # a stop signal arrived (repeats are ignored)
_depth = 0              # nesting of deferred() blocks in effect
_pending = False        # a stop arrived inside a deferred() block


def _on_stop_signal(signum, frame):
    global _stopping, _pending
    if _stopping:
        return
    _stopping = True
    if _depth:
        _pending = True
        return
    raise KeyboardInterrupt


def stop_requested() -> bool:
    """A stop signal has arrived (inside ``stop_on_signals()``)."""
    return _stopping


def _raise_pending():
    global _pending
    if _pending:
        _pending = False
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred():
    """A stop signal arriving in here is raised when the outermost deferred block ends."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            _raise_pending()


@contextlib.contextmanager
def immediate():
    """Inside a deferred block: a stop signal interrupts at once (and one already pending does)."""
    global _depth
    saved, _depth = _depth, 0
    try:
        _raise_pending()
        yield
    finally:
        _depth = saved


@contextlib.contextmanager
def stop_on_signals():
    """SIGINT and SIGTERM raise KeyboardInterrupt once (deferred out of critical blocks); repeats
    are ignored until this exits."""
    global _stopping, _pending, _depth
    if threading.current_thread() is not threading.main_thread():
        yield                       # signal handlers can only be set from the main thread
        return
    _stopping, _pending, _depth = False, False, 0
    previous = {sig: signal.signal(sig, _on_stop_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
