"""What every source does between knowing something and the sink hearing it.

:class:`Publisher` is one source's voice towards its :class:`~dnsd.sources.base.Sink`:

- **Coalescing.** A source says ``changed()`` as often as it likes; the view
  is built and published once the burst is over. With no ``debounce`` that is
  once per loop iteration (everything that landed together makes one view);
  with a ``debounce``, once the source has been quiet (and ``settled``) that
  long, and under steady churn at least every ``max_delay``. A view equal to
  the last one published is not published again.
- **Propagation time.** ``observe()`` notes when the registry first showed a
  change that the next view carries; the sink gets it as ``observed_at``.
- **Once per change.** ``report()`` passes a state to the sink only when it
  (or its ``key``) differs from the last one reported, and ``warn_once()``
  logs a problem once however often it is seen again, so a registry that
  keeps failing, or keeps serving one bad entry, makes one line, not one per
  retry or per poll.

All of it runs on the event loop thread (a source whose library calls back on
other threads hops first, see ``sources.threads``). Imports: ``model``,
``sources.base``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable

from dnsd.model import View
from dnsd.sources.base import Sink, SourceState

WARNED_LIMIT = 4096
"""Problems remembered as already logged; past this they are forgotten (and may
be logged once more) so that a registry full of churning bad entries cannot
grow the set without bound."""


class Publisher:
    """Publishes one source's views (coalesced) and reports its state (once per change).

    ``build`` returns the source's complete current view, or None when no view
    may be published right now (a listing half done, the connection lost): the
    change then stays pending until the next ``changed()`` or ``flush()``.
    ``settled`` says whether the source expects more of the same burst (reads
    still outstanding): a debounced publication waits for it. ``after`` runs
    after every successful flush, published or equal.
    """

    def __init__(self, sink: Sink, name: str, build: Callable[[], View | None], *,
                 log: logging.Logger, debounce: float = 0.0, max_delay: float | None = None,
                 settled: Callable[[], bool] | None = None,
                 after: Callable[[], None] | None = None) -> None:
        self._sink = sink
        self._name = name
        self._build = build
        self._log = log
        self._debounce = debounce
        self._max_delay = max_delay
        self._settled = settled
        self._after = after
        self._loop = asyncio.get_running_loop()
        self._soon: asyncio.Handle | None = None      # the coalesced publication
        self._overdue: asyncio.Handle | None = None   # the max_delay backstop
        self._observed_at: float | None = None
        self._dirty = False
        self._closed = False
        self._last: View | None = None
        self._reported: tuple[SourceState, Hashable] | None = None
        self._warned: set[Hashable] = set()
        self.publishes = 0

    @property
    def last(self) -> View | None:
        """The last view published, None before the first."""
        return self._last

    @property
    def pending(self) -> bool:
        """True while a change is waiting to be published."""
        return self._dirty

    # --- publishing -----------------------------------------------------------

    def observe(self, at: float | None = None) -> None:
        """The registry showed a change now (or ``at``, in loop time); the first
        one since the last publication is what the sink measures lag from."""
        if self._observed_at is None:
            self._observed_at = self._loop.time() if at is None else at

    def changed(self) -> None:
        """Something in the view changed: publish it once the burst is over."""
        if self._closed:
            return
        self.observe()
        self._dirty = True
        if self._max_delay is not None and self._overdue is None:
            self._overdue = self._loop.call_later(self._max_delay, self._on_overdue)
        if self._settled is not None and not self._settled():
            return  # the reply that settles the burst calls changed() again
        if self._debounce <= 0:
            if self._soon is None:  # once per loop iteration, however many changes
                self._soon = self._loop.call_soon(self._on_settled)
            return
        if self._soon is not None:  # wait for a quiet spell
            self._soon.cancel()
        self._soon = self._loop.call_later(self._debounce, self._on_settled)

    def _on_settled(self) -> None:
        self._soon = None
        if self._settled is None or self._settled():
            self.flush()

    def _on_overdue(self) -> None:
        self._overdue = None
        if self._dirty:
            self.flush()

    def flush(self, changed: bool = False) -> bool:
        """Build and publish now (if the view changed); False if ``build``
        said no view may go out yet. ``changed``: the caller knows the view
        differs from the last one, which spares comparing a large view again."""
        if self._closed:
            return False
        view = self._build()
        if view is None:
            return False
        for handle in (self._soon, self._overdue):
            if handle is not None:
                handle.cancel()
        self._soon = self._overdue = None
        self._dirty = False
        observed_at, self._observed_at = self._observed_at, None
        if changed or view != self._last:
            self._last = view
            self.publishes += 1
            self._sink.publish(self._name, view, observed_at)
        if self._after is not None:
            self._after()
        return True

    def close(self) -> None:
        """Publish nothing more (the source is stopping)."""
        self._closed = True
        for handle in (self._soon, self._overdue):
            if handle is not None:
                handle.cancel()
        self._soon = self._overdue = None

    # --- state and warnings ---------------------------------------------------

    @property
    def state(self) -> SourceState:
        """The state last reported (SYNCING before any)."""
        return SourceState.SYNCING if self._reported is None else self._reported[0]

    def report(self, state: SourceState, reason: str = "",
               key: Hashable | None = None) -> bool:
        """Tell the sink about a state change; True if it was one.

        A report equal to the last (same state and ``key``, which defaults to
        the reason) is dropped: a retry that fails again, with a slightly
        different error text, is not news. The caller logs when this returns
        True, in its own words.
        """
        identity = (state, reason if key is None else key)
        if identity == self._reported:
            return False
        self._reported = identity
        self._sink.set_state(self._name, state, reason)
        return True

    def warn_once(self, key: Hashable, message: str, *args: object) -> bool:
        """Log a warning the first time ``key`` is seen; True if it was logged."""
        if key in self._warned:
            return False
        if len(self._warned) >= WARNED_LIMIT:
            self._warned.clear()
        self._warned.add(key)
        self._log.warning(message, *args)
        return True

    def forget(self, key: Hashable) -> bool:
        """The problem ``key`` is gone (the next occurrence is logged again);
        True if it had been logged."""
        if key in self._warned:
            self._warned.discard(key)
            return True
        return False
