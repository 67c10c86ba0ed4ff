"""Cache reads written in groups: one audit transaction for the reads that queued up.

Every answer from the release cache is audited (a zero-cost row in the hash chain), and an
audit row is on disk before its answer leaves: one ``BEGIN IMMEDIATE`` and one fsync'd
commit, about 2-5 ms here. Done one read at a time on the event loop, fifty clients reading
cached releases waited for each other's fsync (0.4-0.7 s at the median, 70-90 reads a
second in all; ``benchmarks/bench_load.py``). Here the reads that arrive while a commit is
under way wait for the next one, which writes all their rows at once, on a thread of its own
so the event loop keeps accepting requests. Durability is unchanged: no read is answered
before its row is committed.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..ledger import CachedRead, Ledger

#: reads per transaction at most: a long batch would hold the ledger's write lock
MAX_BATCH = 256


class CachedReads:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdebug-audit")
        self._queue: list[tuple[CachedRead, asyncio.Future[dict[str, Any] | None]]] = []
        self._writing = False

    async def serve(self, read: CachedRead) -> dict[str, Any] | None:
        """The cached payload for ``read.cache_key`` once its audit row is committed, or
        None when there is no such release (nothing is written then)."""
        future: asyncio.Future[dict[str, Any] | None] = (
            asyncio.get_running_loop().create_future())
        self._queue.append((read, future))
        if not self._writing:
            self._writing = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    served = await loop.run_in_executor(
                        self.pool, self.ledger.serve_cached_many, [r for r, _ in batch])
                except Exception as exc:  # noqa: BLE001 (each waiting request gets it)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), payload in zip(batch, served, strict=True):
                    if not future.done():
                        future.set_result(payload)
        finally:
            self._writing = False

    def close(self) -> None:
        self.pool.shutdown(wait=True)
