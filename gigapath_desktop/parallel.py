"""Ordered, memory-bounded parallel map: the one pattern used by region decoding and slide writing."""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

_I = TypeVar("_I")
_R = TypeVar("_R")


def bounded_map(fn: Callable[[_I], _R], items: Iterable[_I], workers: int | None = None) -> Iterator[tuple[_I, _R]]:
    """Yield (item, fn(item)) in order, computing ahead on a few threads with at most 2 x workers results held."""
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    pending: deque[tuple[_I, Future[_R]]] = deque()
    with ThreadPoolExecutor(workers) as pool:
        try:
            for item in items:
                pending.append((item, pool.submit(fn, item)))
                if len(pending) >= 2 * workers:
                    first, future = pending.popleft()
                    yield first, future.result()
            while pending:
                first, future = pending.popleft()
                yield first, future.result()
        finally:
            for _, future in pending:
                future.cancel()
