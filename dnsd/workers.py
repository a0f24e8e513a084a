"""``--workers N``: N dnsd processes sharing each listen port with SO_REUSEPORT.

Each worker is a whole dnsd (its own sources, table and caches). Chosen over
one watcher feeding the others because it keeps the one-way data flow intact
inside each process, has no snapshot shipping between processes on the hot
path, and a crashed worker takes nothing with it; the price is N watches on each
registry (N is the core count, so a handful of extra long-polls).

The supervisor resolves port 0 once, so every worker binds the same ports, then
forks the workers, forwards SIGTERM/SIGINT/SIGHUP to them, and restarts one that
dies unexpectedly. Imports: ``config``, ``listen``, ``signals``
(the worker itself is run by the caller).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable

from dnsd.config import Config
from dnsd.listen import pick_ports
from dnsd.signals import HANDLED, PendingSignals

log = logging.getLogger("dnsd.workers")

RESTART_BACKOFF = 1.0


def resolve_ports(config: Config) -> Config:
    """Replace port 0 listen addresses with a port free for both UDP and TCP."""
    return dataclasses.replace(config, listen=pick_ports(config.listen, config.freebind))


def supervise(config: Config,
              run_worker: Callable[[Config, int, PendingSignals], int]) -> int:
    """Run ``config.workers`` workers until a signal; return the exit status."""
    config = resolve_ports(config)
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def spawn(index: int) -> None:
        # Signals stay blocked across the fork, so none reaches the child while
        # it still runs the supervisor's handler; the child records them until
        # its app serves (a worker told to stop while starting stops cleanly).
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        try:
            pid = os.fork()
            if pid == 0:  # the worker
                status = 1
                try:
                    pending = PendingSignals().install()
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
                    status = run_worker(config, index, pending)
                finally:
                    os._exit(status)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
        children[pid] = index

    def forward(sig: int, _frame: object) -> None:
        nonlocal stopping
        if sig in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    for sig in HANDLED:
        signal.signal(sig, forward)
    for index in range(config.workers):
        spawn(index)
    worst = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in children:
            continue
        index = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            worst = max(worst, code if code > 0 else 0)
            continue
        if code in (1, 2):  # a configuration or bind error: restarting won't help
            log.error("worker %d exited with status %d; stopping", index, code)
            forward(signal.SIGTERM, None)
            worst = code
            continue
        log.error("worker %d exited with status %d; restarting it", index, code)
        time.sleep(RESTART_BACKOFF)
        spawn(index)
    return worst
