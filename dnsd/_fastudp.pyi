"""Types of the compiled UDP loop (``dnsd/_fastudp.c``)."""

from collections.abc import Callable, Sequence
from typing import Any

MAX_BATCH: int

class Reader:
    """One UDP socket's batched loop (see ``dnsd/_fastudp.c``)."""

    @property
    def served(self) -> int: ...
    @property
    def send_errors(self) -> int: ...
    def __init__(self, fd: int, batch: int = 32, max_query: int = 4096, pktinfo: bool = False,
                 v6: bool = False) -> None: ...
    def serve(self, budget: int, replies: Any, forwarded: Any, allowed: Any, key_limit: int,
              fallback: Callable[..., bytes | None], stats: Any,
              buckets: Sequence[float], /) -> int: ...
    def close(self) -> None: ...
    def take_errors(self) -> tuple[int, int]: ...
