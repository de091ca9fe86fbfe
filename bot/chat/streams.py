"""A streamed answer read on a worker thread (answering blocks: embedding, the store, the
model's HTTP stream) and handed to the event loop, for the adapters that stream."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Iterator

from bot.answer.streaming import Delta, Final
from bot.answer.types import Requester

Stream = Callable[[str, Requester], Iterator[Delta | Final]]
Items = asyncio.Queue[Delta | Final | BaseException]


def stream_queue(stream: Stream, question: str, requester: Requester) -> Items:
    """``stream(question, requester)``'s items as a queue on the running event loop, as
    they come; a failure is put on it as its exception, and nothing after it."""
    loop = asyncio.get_running_loop()
    items: Items = asyncio.Queue()

    def read() -> None:
        try:
            for item in stream(question, requester):
                loop.call_soon_threadsafe(items.put_nowait, item)
        except BaseException as e:  # handed to the reader, which decides what the user sees
            loop.call_soon_threadsafe(items.put_nowait, e)

    # A thread of its own, not the loop's executor: a slow stream must not hold one of the
    # few workers that asyncio.to_thread calls (deliveries, votes) share. In this context,
    # as asyncio.to_thread would: the request's id becomes the query's, spans nest.
    context = contextvars.copy_context()
    threading.Thread(
        target=context.run, args=(read,), name="kbot-stream-reader", daemon=True
    ).start()
    return items
