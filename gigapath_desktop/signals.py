"""SIGINT / SIGTERM routed to a handler for a while, then given back to whatever handled them before."""
from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Any, Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
Handler = Callable[[int, Any], None]


@contextmanager
def routed_signals(handler: Handler, keep_ignored: bool = True) -> Iterator[dict[int, Any]]:
    """Inside the block SIGINT and SIGTERM call `handler`; yields the handlers they had. With `keep_ignored`, a
    signal the process was told to ignore (SIG_IGN, e.g. by `nohup`) stays ignored. Main thread only (Python's
    rule for signal handlers)."""
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig, old in previous.items():
        if not (keep_ignored and old is signal.SIG_IGN):
            signal.signal(sig, handler)
    try:
        yield previous
    finally:
        for sig, old in previous.items():  # a handler set outside Python reads as None: the default stands for it
            signal.signal(sig, signal.SIG_DFL if old is None else old)
