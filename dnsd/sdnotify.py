"""systemd's readiness protocol (``Type=notify``), without a dependency.

systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace) to a ``Type=notify`` service and waits for ``READY=1`` before it
counts the service as started and starts what is ordered after it (Docker,
for a dnsd that containers use). dnsd sends it once its listeners are bound, so
"started" means "answering". Without ``NOTIFY_SOCKET`` (not under systemd, or
another service type) nothing is sent. A failure to send is logged, and
never stops dnsd. Imports only the standard library.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("dnsd.sdnotify")


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``READY=1``, ``STOPPING=1``) to systemd; True if sent."""
    path = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot tell systemd %s through %s: %s", state, path,
                    exc.strerror or exc)
        return False
    return True
