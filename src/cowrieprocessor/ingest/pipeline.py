"""Run a producer ahead of its consumer in a background thread.

The loader reads and parses (pure Python, holding the GIL) while the database works on the
previous batch (COPY and queries release the GIL while they wait), so the two overlap.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from queue import Empty, Full, Queue
from typing import TypeVar

T = TypeVar("T")

_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class _Failure:
    error: BaseException


class _Done:
    pass


_DONE = _Done()


def run_ahead(items: Generator[T, None, None], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` in order while a thread computes up to ``depth`` items ahead.

    An exception raised by the producer is raised here, in the consumer, at the point
    where its item would have come. When the consumer stops early (an exception, a
    KeyboardInterrupt, or closing this iterator), the producer is told to stop, its
    generator is closed in its own thread, and the thread is joined before this returns.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    queue: Queue[T | _Failure | _Done] = Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: T | _Failure | _Done) -> bool:
        while not stop.is_set():
            try:
                queue.put(item, timeout=_POLL_SECONDS)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            put(_Failure(error))
        else:
            put(_DONE)
        finally:
            items.close()

    thread = threading.Thread(target=produce, name="cowrie-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            try:
                got = queue.get(timeout=_POLL_SECONDS)
            except Empty:
                if not thread.is_alive() and queue.empty():
                    raise RuntimeError("the read-ahead thread ended without a result") from None
                continue
            if isinstance(got, _Done):
                return
            if isinstance(got, _Failure):
                raise got.error
            yield got
    finally:
        stop.set()
        thread.join()
