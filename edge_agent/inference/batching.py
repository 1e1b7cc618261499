"""Dynamic batching, as Triton's dynamic batcher does it: ModelInfer requests that arrive together run as one batch.

Requests queue up; a batch takes all that are queued (up to `max_batch` items; agent.json), runs the
preprocessing and one onnxruntime call over them, journals every prediction in one SQLite transaction and only
then answers each request with its own rows. gRPC hands the event loop one request at a time, so a batch waits
until as many items are queued as the previous batch held, or `max_queue_delay_ms` has passed: under steady load
batches stay full, and after a lone request (a batch of one) the next one does not wait. Batching pays because a
request's own work is small next to what surrounds it: per text, tokenizing a batch keeps the vocabulary and the
stemmer's cache hot in the CPU's caches, and onnxruntime and the journal commit run once per batch, not per request.

A batch that fails is run again request by request, so a request that breaks the model fails alone. A request
with `max_batch` items or more runs by itself (in the thread pool when it is big, so the loop keeps serving).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.inference.model import LoadedModel, Prediction
from edge_agent.journal import Journal

INLINE_ITEMS = 8  # a request alone with up to this many items runs on the event loop; bigger ones in the pool


class JournalError(Exception):
    """The scoring journal could not be written: the prediction is not answered (nothing is served unjournaled)."""


@dataclass
class _Pending:
    model: LoadedModel
    items: Any  # list[str] for text, (n, H, W, C) ndarray for images
    raw: list[bytes]
    future: asyncio.Future
    queued: float  # time.perf_counter() when it joined the queue

    @property
    def key(self) -> tuple[int, str]:
        dtype = "" if isinstance(self.items, list) else str(self.items.dtype)
        return id(self.model), dtype


class Batcher:
    def __init__(self, journal: Journal, pool: Executor, max_batch: int, keep_raw_below: float,
                 max_delay_ms: float = 2.0, on_batch: Callable[..., None] | None = None):
        self.journal = journal
        self.pool = pool
        self.max_batch = max(1, int(max_batch))
        self.keep_raw_below = keep_raw_below
        self.max_delay = max(0.0, float(max_delay_ms)) / 1000
        self._queue: list[_Pending] = []
        self._queued = 0  # items in the queue
        self._last = 1  # items in the last batch: the size the next one waits for (up to max_delay)
        self._want = 0
        self._enough: asyncio.Event | None = None
        self._draining = False
        self.batches = 0  # how many batches ran, how many items they held (on_batch hears of each)
        self.batched_items = 0
        self.on_batch = on_batch

    async def predict(self, model: LoadedModel, items: Any, raw: list[bytes]) -> Prediction:
        """The prediction for one request's items, journaled before it returns."""
        loop = asyncio.get_running_loop()
        if self.max_batch <= 1 or len(items) >= self.max_batch:
            if len(items) <= INLINE_ITEMS:
                pred = _run(model, items)
            else:
                pred = await loop.run_in_executor(self.pool, _run, model, items)
            t = time.perf_counter()
            await self._journal([self._records(model, pred, raw)])
            self._count(len(items), 1, 0.0, pred, time.perf_counter() - t)
            return pred
        fut = loop.create_future()
        self._queue.append(_Pending(model, items, raw, fut, time.perf_counter()))
        self._queued += len(items)
        if self._enough is not None and self._queued >= self._want:
            self._enough.set()
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._gather()
                queue, self._queue = self._queue, []
                self._last, self._queued = self._queued, 0
                for group in self._groups(queue):
                    await self._run_group(group)
        finally:
            self._draining = False

    async def _gather(self) -> None:
        """Wait until as many items are queued as the last batch held, or max_delay has passed."""
        want = min(self._last, self.max_batch)
        if self._queued >= want:
            return
        self._enough = asyncio.Event()
        self._want = want
        try:
            await asyncio.wait_for(self._enough.wait(), self.max_delay)
        except TimeoutError:
            pass
        finally:
            self._enough = None

    def _groups(self, queue: list[_Pending]) -> list[list[_Pending]]:
        """Requests for the same model (and pixel type), in arrival order, in batches of at most max_batch items."""
        by_key: dict[tuple[int, str], list[list[_Pending]]] = {}
        for p in queue:
            batches = by_key.setdefault(p.key, [[]])
            if batches[-1] and sum(len(q.items) for q in batches[-1]) + len(p.items) > self.max_batch:
                batches.append([])
            batches[-1].append(p)
        return [b for batches in by_key.values() for b in batches]

    async def _run_group(self, group: list[_Pending]) -> None:
        model = group[0].model
        if len(group) == 1:
            items = group[0].items
        elif isinstance(group[0].items, list):
            items = [t for p in group for t in p.items]
        else:
            items = np.concatenate([p.items for p in group])
        start = time.perf_counter()
        try:
            whole = _run(model, items)
            preds = _split(whole, [len(p.items) for p in group])
        except Exception as exc:  # noqa: BLE001
            if len(group) == 1:
                _fail(group, exc)
                return
            for p in group:  # one request may have broken the batch: each runs alone, and fails alone
                await self._run_group([p])
            return
        records = [self._records(model, pred, p.raw) for p, pred in zip(group, preds, strict=True)]
        t = time.perf_counter()
        try:
            await self._journal(records)
        except Exception as exc:  # noqa: BLE001
            _fail(group, JournalError(f"{type(exc).__name__}: {exc}"))
            return
        self._count(len(items), len(group), sum(start - p.queued for p in group), whole, time.perf_counter() - t)
        for p, pred in zip(group, preds, strict=True):
            if not p.future.done():
                p.future.set_result(pred)

    async def _journal(self, record_lists: list[list[dict[str, Any]]]) -> None:
        if self.journal.sync == "full":  # an fsync per commit: the writer thread takes it, the loop goes on
            await self.journal.append([r for rs in record_lists for r in rs])
        else:  # WAL without fsync: a commit is a write() of a few kB, cheaper than a hop to a thread and back
            self.journal.write(record_lists)

    def _count(self, items: int, requests: int, queued_s: float, pred: Prediction, output_s: float) -> None:
        """One batch done: `requests` requests of `items` items, which waited `queued_s` in all; the batch's
        preprocessing and onnxruntime times (pred) and its journal commit (output_s) count once per request, as
        Triton counts a batch's compute time for each request in it."""
        self.batches += 1
        self.batched_items += items
        if self.on_batch is not None:
            infer_s = pred.infer_ms / 1000
            self.on_batch(items, requests=requests, queue_us=int(queued_s * 1e6),
                          input_us=int(requests * (pred.latency_ms / 1000 - infer_s) * 1e6),
                          infer_us=int(requests * infer_s * 1e6), output_us=int(requests * output_s * 1e6))

    def _records(self, m: LoadedModel, pred: Prediction, raw_list: list[bytes]) -> list[dict[str, Any]]:
        now = time.time()
        per_item = pred.latency_ms / max(1, len(pred.labels))
        probabilities = np.round(pred.probabilities.astype(np.float64), 6).tolist()
        out = []
        for i, (label, conf) in enumerate(zip(pred.labels, pred.confidence.tolist(), strict=True)):
            out.append({"time": now, "bundle_id": m.bundle_id, "model": m.name, "version": m.version,
                        "variant": m.variant, "input_summary": pred.summaries[i], "label": label,
                        "confidence": conf, "probabilities": probabilities[i],
                        "latency_ms": per_item, "raw_input": raw_list[i] if conf < self.keep_raw_below else None,
                        "raw_kind": m.kind})
        return out


def _run(model: LoadedModel, items: Any) -> Prediction:
    return model.predict_texts(items) if model.kind == "text" else model.predict_images(items)


def _split(pred: Prediction, counts: list[int]) -> list[Prediction]:
    if len(counts) == 1:
        return [pred]
    per_item = pred.latency_ms / max(1, sum(counts))
    out, a = [], 0
    for n in counts:
        b = a + n
        out.append(Prediction(pred.probabilities[a:b], pred.labels[a:b], pred.confidence[a:b], pred.summaries[a:b],
                              per_item * n))
        a = b
    return out


def _fail(group: list[_Pending], exc: BaseException) -> None:
    for p in group:
        if not p.future.done():
            p.future.set_exception(exc)
