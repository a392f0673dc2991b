"""The application class: what it changes in Flask, and that it changes nothing else."""

from __future__ import annotations

import pytest


def test_the_app_remembers_that_its_functions_are_plain(app):
    """FlexApp.ensure_sync: a plain function is returned as is (and remembered); a coroutine
    function still goes to Flask's async support, which needs the 'async' extra (not
    installed), exactly as with Flask itself."""
    def view() -> str:
        return "ok"

    async def coroutine_view() -> str:
        return "ok"

    assert app.ensure_sync(view) is view
    assert app.ensure_sync(view) is view
    with pytest.raises(RuntimeError, match="async"):
        app.ensure_sync(coroutine_view)
