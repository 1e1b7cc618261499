"""Benchmarks: run by `make bench` only. Each prints its figures (and ratios against a baseline measured in
the same run) and appends them to bench-results/results.jsonl."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.integration.conftest import bbc_packaged, bbc_packaged_template  # noqa: F401 (fixtures)

RESULTS = Path(__file__).resolve().parents[2] / "bench-results" / "results.jsonl"


def pytest_collection_modifyitems(items):
    for item in items:
        if "benchmarks" in str(item.fspath):
            item.add_marker(pytest.mark.bench)


@pytest.fixture
def record():
    def _record(name: str, **figures) -> None:
        RESULTS.parent.mkdir(exist_ok=True)
        with open(RESULTS, "a") as fh:
            fh.write(json.dumps({"bench": name, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **figures}) + "\n")
        print(f"\n[bench] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))

    return _record
