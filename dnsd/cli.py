"""The command line: parse configuration, set up logging, run the app.

The only place that exits: a :class:`DnsdError` (bad option, bad services file)
or a failed bind becomes one line on stderr and exit status 2 (1 for bind).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import uvloop

from dnsd.config import Config, load_config
from dnsd.errors import DnsdError


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(args)
    except DnsdError as exc:
        print(f"dnsd: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if config.workers > 1:
        from dnsd.workers import supervise

        return supervise(config, lambda cfg, index: run_worker(cfg, index, args))
    return run_worker(config, 0, args)


def run_worker(config: Config, index: int, args: Sequence[str] = ()) -> int:
    """Run one dnsd process until it is told to stop; return its exit status."""
    from dnsd.app import App  # after logging: importing sources may log

    async def run() -> None:
        app = App(config, worker=index, reload_config=lambda: load_config(args))
        await app.serve()

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
