"""Publish coalescing and once-per-change reporting, shared by every source."""

from __future__ import annotations

import asyncio
import logging

import pytest

from dnsd.model import Instance, View
from dnsd.sources.base import SourceState
from dnsd.sources.publisher import Publisher
from tests.sinks import RecordingSink

log = logging.getLogger("test.publisher")


def view_of(*ports: int) -> View:
    return View(tuple(Instance("web", "node1", "dc1", address="10.0.0.1", port=p)
                      for p in ports))


class Registry:
    """What a source knows; the publisher builds views from it."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.ready = True
        self.outstanding = 0

    def build(self) -> View | None:
        return view_of(*self.ports) if self.ready else None


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.001)
    await asyncio.wait_for(poll(), timeout)


async def test_changes_in_one_loop_iteration_make_one_view() -> None:
    sink, reg = RecordingSink(), Registry()
    pub = Publisher(sink, "src", reg.build, log=log)
    for port in range(1, 51):
        reg.ports.append(port)
        pub.changed()
    assert sink.views == []  # nothing yet: the burst may not be over
    await settle()
    assert len(sink.views) == 1 and sink.view == view_of(*range(1, 51))
    assert pub.publishes == 1 and not pub.pending


async def test_an_equal_view_is_not_published_again() -> None:
    sink, reg = RecordingSink(), Registry()
    pub = Publisher(sink, "src", reg.build, log=log)
    assert pub.flush() and len(sink.views) == 1  # the first view, even empty, goes out
    pub.changed()
    await settle()
    assert len(sink.views) == 1


async def test_observed_at_is_the_first_change_since_the_last_view() -> None:
    sink, reg = RecordingSink(), Registry()
    pub = Publisher(sink, "src", reg.build, log=log)
    pub.observe(at=10.0)
    pub.observe(at=11.0)
    reg.ports.append(80)
    pub.changed()
    await settle()
    reg.ports.append(81)
    pub.changed()
    await settle()
    assert sink.observed[0] == 10.0
    assert sink.observed[1] is not None and sink.observed[1] > 11.0  # the loop's own clock


async def test_debounce_waits_for_quiet_and_max_delay_bounds_churn() -> None:
    sink, reg = RecordingSink(), Registry()
    pub = Publisher(sink, "src", reg.build, log=log, debounce=0.05, max_delay=0.2,
                    settled=lambda: reg.outstanding == 0)
    reg.outstanding = 1  # reads keep coming: never settled
    for n in range(30):
        reg.ports.append(n + 1)
        pub.changed()
        await asyncio.sleep(0.01)
        if sink.views:
            break
    # Published by the max_delay backstop despite the churn, a partial state.
    assert len(sink.views) == 1 and 1 <= len(sink.view.instances) < 30  # type: ignore[union-attr]
    reg.outstanding = 0
    reg.ports.append(100)
    pub.changed()
    await wait_for(lambda: len(sink.views) == 2)
    assert sink.view == view_of(*reg.ports)


async def test_nothing_goes_out_while_build_says_not_now() -> None:
    sink, reg = RecordingSink(), Registry()
    pub = Publisher(sink, "src", reg.build, log=log)
    reg.ready = False
    reg.ports.append(80)
    pub.changed()
    await settle()
    assert sink.views == [] and pub.pending
    reg.ready = True
    assert pub.flush() and sink.view == view_of(80)


async def test_after_runs_once_the_view_is_out() -> None:
    sink, reg = RecordingSink(), Registry()
    order: list[str] = []
    pub = Publisher(sink, "src", reg.build, log=log,
                    after=lambda: order.append(f"after {len(sink.views)}"))
    reg.ports.append(80)
    pub.changed()
    await settle()
    assert order == ["after 1"]


async def test_closed_publishes_nothing() -> None:
    sink, reg = RecordingSink(), Registry()
    pub = Publisher(sink, "src", reg.build, log=log, debounce=0.01, max_delay=0.02)
    reg.ports.append(80)
    pub.changed()
    pub.close()
    await asyncio.sleep(0.05)
    assert sink.views == [] and not pub.flush()


async def test_state_is_reported_once_per_change() -> None:
    sink, reg = RecordingSink(), Registry()
    pub = Publisher(sink, "src", reg.build, log=log)
    assert pub.state is SourceState.SYNCING
    assert pub.report(SourceState.STALE, "refused")
    assert not pub.report(SourceState.STALE, "refused")
    assert pub.report(SourceState.STALE, "timed out")  # a new reason is news...
    # ...unless the caller's key says it is the same failure.
    assert pub.report(SourceState.STALE, "dc1: refused", key="dc1")
    assert not pub.report(SourceState.STALE, "dc1: timed out", key="dc1")
    assert pub.report(SourceState.UP)
    assert [(s.state, s.reason) for s in sink.states] == [
        (SourceState.STALE, "refused"), (SourceState.STALE, "timed out"),
        (SourceState.STALE, "dc1: refused"), (SourceState.UP, "")]
    assert pub.state is SourceState.UP


async def test_warnings_are_logged_once_per_problem(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "test.publisher")
    pub = Publisher(RecordingSink(), "src", Registry().build, log=log)
    for _ in range(3):
        pub.warn_once(("web", "bad port"), "skipping %s: %s", "web-1", "bad port")
    assert [r.getMessage() for r in caplog.records] == ["skipping web-1: bad port"]
    assert pub.forget(("web", "bad port")) and not pub.forget(("web", "bad port"))
    assert pub.warn_once(("web", "bad port"), "again")


async def test_flush_changed_spares_the_comparison() -> None:
    sink, reg = RecordingSink(), Registry()
    pub = Publisher(sink, "src", reg.build, log=log)
    assert pub.flush() and pub.flush(changed=True)  # the caller vouches it differs
    assert len(sink.views) == 2
