"""Big batches pause the cyclic garbage collector; it always comes back as it was."""

from __future__ import annotations

import gc

from flexsvc.rules.fastpath import gc_paused


def test_nested_pauses_restore_the_collector_once_the_last_one_ends() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_inactive_pause_and_errors_leave_the_collector_alone() -> None:
    with gc_paused(False):
        assert gc.isenabled()
    try:
        with gc_paused():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()

