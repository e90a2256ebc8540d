"""Calling synchronous, loop-owning code from wherever a case runs."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def off_event_loop(fn: Callable[[], T]) -> T:
    """Run `fn` here, or in a worker thread when this thread runs an event loop.

    The SDK's sync calls (and asyncio.run) refuse to run inside a running loop,
    e.g. when a pytest-asyncio test calls an adapter or an executor.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()
