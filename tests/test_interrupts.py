"""Stop signals: deferred out of critical blocks (a Store write, Optuna's bookkeeping), at once
inside immediate() (training), always visible as a flag (a KeyboardInterrupt can be swallowed)."""
import os
import signal

import pytest

from hybridlab import interrupts


def send_stop():
    os.kill(os.getpid(), signal.SIGTERM)     # the handler runs before kill() returns to us


def test_a_stop_inside_a_deferred_block_waits_for_its_end():
    with interrupts.stop_on_signals():
        done = []
        with pytest.raises(KeyboardInterrupt):
            with interrupts.deferred():
                with interrupts.deferred():
                    send_stop()
                    done.append("inner")
                done.append("outer")          # nested blocks finish first
        assert done == ["inner", "outer"] and interrupts.stop_requested()


def test_immediate_raises_a_pending_stop_and_repeats_are_ignored():
    with interrupts.stop_on_signals():
        with pytest.raises(KeyboardInterrupt):
            with interrupts.deferred():
                send_stop()
                with interrupts.immediate():
                    pytest.fail("immediate() should raise the pending stop on entry")
        send_stop()                           # a repeat: ignored, so recording can finish
        assert interrupts.stop_requested()


def test_a_stop_outside_any_block_raises_at_once():
    with interrupts.stop_on_signals():
        with pytest.raises(KeyboardInterrupt):
            send_stop()
    with interrupts.stop_on_signals():        # a new scope starts clean
        assert not interrupts.stop_requested()
