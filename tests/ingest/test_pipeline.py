from __future__ import annotations

import threading
import time
from collections.abc import Generator

import pytest

from cowrieprocessor.ingest.pipeline import run_ahead


def test_items_come_in_order_from_another_thread() -> None:
    threads: list[str] = []

    def numbers() -> Generator[int, None, None]:
        for n in range(100):
            threads.append(threading.current_thread().name)
            yield n

    assert list(run_ahead(numbers(), depth=3)) == list(range(100))
    assert set(threads) == {"cowrie-read-ahead"}


def test_producer_error_is_raised_in_the_consumer_after_earlier_items() -> None:
    def failing() -> Generator[int, None, None]:
        yield 1
        yield 2
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in run_ahead(failing()):
            got.append(item)
    assert got == [1, 2]


def test_consumer_error_stops_and_closes_the_producer() -> None:
    closed = threading.Event()
    produced: list[int] = []

    def endless() -> Generator[int, None, None]:
        try:
            n = 0
            while True:
                produced.append(n)
                yield n
                n += 1
        finally:
            closed.set()

    with pytest.raises(RuntimeError, match="writer failed"):
        for item in run_ahead(endless(), depth=2):
            if item == 5:
                raise RuntimeError("writer failed")
    assert closed.wait(2)
    time.sleep(0.3)
    assert len(produced) <= 5 + 1 + 2 + 1  # bounded by the queue depth, not endless
    assert not any(t.name == "cowrie-read-ahead" for t in threading.enumerate())


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth"):
        list(run_ahead((n for n in range(3)), depth=0))
