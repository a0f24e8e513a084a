"""The command line: ``dnsd [options]`` serves; ``dnsd check [options]``
validates; ``dnsd table [options]`` shows what a running dnsd serves.

The only place that exits: a :class:`DnsdError` (bad option, bad services file,
an address that cannot be bound) becomes one line on stderr and exit status 2.
Imports: ``signals`` first (so a signal during start-up is never fatal), then
``config``, ``errors``, ``logs``, ``app``, ``workers`` and, for the
subcommands, ``build``, ``sources.servicesfile`` and ``tableview``.
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
    if args and args[0] in SUBCOMMANDS:
        return SUBCOMMANDS[args[0]](args[1:])
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


def check(args: Sequence[str]) -> int:
    """``dnsd check``: load the configuration and every services file as serving
    would, print each problem on one line, exit 0 or 2. Binds nothing and asks
    no registry."""
    from dnsd.build import build
    from dnsd.config import load_config
    from dnsd.errors import DnsdError
    from dnsd.sources.servicesfile import check_services, load_services_file

    try:
        config = load_config(args)
        build(config)  # what serving would build (the upstreams, say), minus sockets
    except DnsdError as exc:
        print(f"dnsd: error: {exc}", file=sys.stderr)
        return 2
    problems = 0
    for path in config.static:
        found = check_services(path, config.node_name, config.datacenter)
        for problem in found:
            print(f"dnsd: error: {problem}", file=sys.stderr)
        problems += len(found)
        if not found:
            view = load_services_file(path, config.node_name, config.datacenter)
            print(f"{path}: {len(view.instances)} instances, "
                  f"{len({i.service for i in view.instances})} services")
    if problems:
        return 2
    print("configuration ok")
    return 0


def table(args: Sequence[str]) -> int:
    """``dnsd table``: print the table of the dnsd serving at ``--metrics``."""
    import json
    import urllib.request

    from dnsd.config import load_config
    from dnsd.errors import DnsdError
    from dnsd.tableview import table_text

    as_json = "--json" in args
    try:
        config = load_config([a for a in args if a != "--json"])
    except DnsdError as exc:
        print(f"dnsd: error: {exc}", file=sys.stderr)
        return 2
    if config.metrics is None:
        print("dnsd: error: dnsd table needs the metrics address of the running dnsd: "
              "--metrics ADDR:PORT (or DNSD_METRICS, or metrics in --config)", file=sys.stderr)
        return 2
    host, port = config.metrics
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    url = f"http://[{host}]:{port}/v1/table" if ":" in host else f"http://{host}:{port}/v1/table"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            data = json.loads(resp.read())
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        print(f"dnsd: error: --metrics {host}:{port}: cannot read {url}: {reason}",
              file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(data, indent=1) + "\n" if as_json else table_text(data))
    return 0


SUBCOMMANDS = {"check": check, "table": table}


if __name__ == "__main__":
    sys.exit(main())
