"""The command line: parse configuration, set up logging, run the app.

The only place that exits: a :class:`DnsdError` (bad option, bad services file)
or a failed bind becomes one line on stderr and exit status 2 (1 for bind).
Imports: ``signals`` first (so a signal during start-up is never fatal), then
``config``, ``errors``, ``app`` and ``workers``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dnsd.signals import PendingSignals

if TYPE_CHECKING:
    from dnsd.config import Config


def main(argv: Sequence[str] | None = None) -> int:
    # First of all, before the slower imports: a signal that arrives while dnsd
    # is starting is kept for the app (a graceful stop, a reload), never the
    # default action that kills the process.
    pending = PendingSignals().install()
    from dnsd import logs
    from dnsd.config import load_config
    from dnsd.errors import DnsdError

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(args)
    except DnsdError as exc:
        print(f"dnsd: error: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log_level, config.log_format, query_log=config.query_log)
    if config.workers > 1:
        from dnsd.workers import supervise

        logs.set_worker("supervisor")

        def worker(cfg: Config, index: int, signals: PendingSignals) -> int:
            logs.set_worker(f"worker {index}")
            return run_worker(cfg, index, args, signals)

        return supervise(config, worker)
    return run_worker(config, 0, args, pending)


def run_worker(config: Config, index: int, args: Sequence[str] = (),
               pending: PendingSignals | None = None) -> int:
    """Run one dnsd process until it is told to stop; return its exit status."""
    import uvloop

    from dnsd.app import App  # after logging: importing sources may log
    from dnsd.config import load_config
    from dnsd.errors import DnsdError

    async def run() -> None:
        app = App(config, worker=index, reload_config=lambda: load_config(args))
        await app.serve(pending=pending)

    try:
        # uvloop: libuv's event loop, several times faster for small UDP packets.
        uvloop.run(run())
    except DnsdError as exc:
        print(f"dnsd: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"dnsd: error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
