"""The scoring journal alone: group commit, sequence numbers never reused, acknowledged records pruned after
the retention."""

from __future__ import annotations

import asyncio
import time

from edge_agent.journal import Journal


def _rec(i: int) -> dict:
    return {"time": time.time(), "bundle_id": "b", "model": "m", "version": "1", "variant": "fp32",
            "input_summary": {"length": i}, "label": "x", "confidence": 0.9, "probabilities": [0.1, 0.9],
            "latency_ms": 1.0, "raw_input": None, "raw_kind": "text"}


def test_concurrent_appends_get_distinct_sequence_numbers(tmp_path):
    j = Journal(tmp_path / "j.db")

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(j.append([_rec(i), _rec(i)]) for i in range(50)))

    seqs = [s for batch in asyncio.run(main()) for s in batch]
    assert sorted(seqs) == list(range(1, 101))
    assert j.last_seq() == 100 and j.count() == 100
    assert [r["seq"] for r in j.read(95)] == [96, 97, 98, 99, 100]
    j.close()


def test_ack_prunes_after_retention_and_sequence_numbers_are_not_reused(tmp_path):
    j = Journal(tmp_path / "j.db")
    asyncio.run(j.append([_rec(i) for i in range(10)]))
    acked, pruned = j.ack(6, retention_seconds=3600)
    assert (acked, pruned) == (6, 0)  # kept: younger than the retention
    acked, pruned = j.ack(6, retention_seconds=0)
    assert (acked, pruned) == (6, 6)
    assert [r["seq"] for r in j.read(0)] == [7, 8, 9, 10]
    # an ack beyond what exists is clamped; sequence numbers continue after pruning
    assert j.ack(99, retention_seconds=0)[0] == 10
    assert asyncio.run(j.append([_rec(0)])) == [11]
    j.close()
    # and survive a restart
    j2 = Journal(tmp_path / "j.db")
    assert j2.last_seq() == 11 and j2.acked_seq() == 10
    j2.close()
