"""Driving the TUI in tests: async tests without a pytest plugin, and waiting until what
workers post back (lineage, norms, long actions) and the footer's keys are on screen."""
from __future__ import annotations

import asyncio
import functools


def async_test(fn):
    """Run an async test (Textual's Pilot) on a fresh event loop; no pytest plugin needed."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))
    return run


async def settle(app, pilot, timeout: float = 3.0) -> None:
    """Wait for workers and what they post back, and for the footer to show its keys (it
    composes them a few frames after mount on a busy machine)."""
    from textual.widgets import Footer
    from textual.widgets._footer import FooterKey

    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()
    footers = app.screen.query(Footer)
    for _ in range(int(timeout / 0.05)):
        if not footers or all(f.query(FooterKey) for f in footers):
            break
        await pilot.pause(0.05)
    await pilot.pause()
