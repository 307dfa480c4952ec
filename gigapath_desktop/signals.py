"""SIGINT / SIGTERM routed to a handler for a while, then given back to whatever handled them before.

Main thread only (Python's rule for signal handlers)."""
from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Any, Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
Handler = Callable[[int, Any], None]


class Terminated(KeyboardInterrupt):
    """A stop by SIGTERM: handled as Ctrl-C everywhere, but the command exits 143 (128 + 15), as shells expect."""


def stopped_by(signum: int) -> KeyboardInterrupt:
    """The exception a stop by `signum` ends in."""
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def stop_handlers() -> dict[int, Any]:
    """SIGINT's and SIGTERM's handlers now, to `route` by and `restore` later."""
    return {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}


def route(previous: dict[int, Any], handler: Handler, keep_ignored: bool = True) -> None:
    """Point the stop signals at `handler`; with `keep_ignored`, one that `previous` ignores (SIG_IGN, e.g. under
    `nohup`) stays ignored."""
    for sig, old in previous.items():
        if not (keep_ignored and old is signal.SIG_IGN):
            signal.signal(sig, handler)


def restore(previous: dict[int, Any]) -> None:
    """Give the stop signals back to `previous` (a handler set outside Python reads as None: the default)."""
    for sig, old in previous.items():
        signal.signal(sig, signal.SIG_DFL if old is None else old)


@contextmanager
def routed_signals(handler: Handler, keep_ignored: bool = True) -> Iterator[dict[int, Any]]:
    """Inside the block the stop signals call `handler`; yields the handlers they had."""
    previous = stop_handlers()
    try:
        route(previous, handler, keep_ignored)
        yield previous
    finally:
        restore(previous)
