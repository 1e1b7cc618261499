"""Many instances of a frozen dataclass at once, for the tables and index files of 70 000 rows.

A frozen dataclass's __init__ sets each field through object.__setattr__, and the garbage collector, woken by
every 700 new objects, walks the young ones again and again: making Fashion-MNIST's 70 000 items or index rows that
way took 0.7-1.2 s, each time the registry's items or the dataset's index was read.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def fields_of(cls: type) -> tuple[str, ...]:
    return tuple(cls.__dataclass_fields__)  # type: ignore[attr-defined]


def frozen_many(cls: type[T], rows: Iterable[Sequence[Any]], fields: Sequence[str] | None = None) -> list[T]:
    """Instances of `cls` (a frozen dataclass without slots), one for each row of values in the order of `fields`
    (default: every field of `cls`, in its order). Equal to `cls(*row)` for rows of every field; no default is
    filled in."""
    names = tuple(fields or fields_of(cls))
    new, put = object.__new__, object.__setattr__  # frozen: the class's own __setattr__ refuses
    with no_collection():
        out = []
        for row in rows:
            obj = new(cls)
            put(obj, "__dict__", dict(zip(names, row, strict=True)))
            out.append(obj)
        return out


def frozen_from_dicts(cls: type[T], dicts: Sequence[dict[str, Any]]) -> list[T]:
    """Instances of `cls` whose __dict__ is each of `dicts` (which must hold every field and nothing else; the
    caller checks): the dicts are taken, not copied."""
    new, put = object.__new__, object.__setattr__
    with no_collection():
        out = [new(cls) for _ in dicts]
        for obj, d in zip(out, dicts, strict=True):
            put(obj, "__dict__", d)
        return out


class no_collection:  # noqa: N801 - used as a plain context manager
    """The garbage collector held off while many objects that hold no cycles are made."""

    def __enter__(self) -> None:
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.was:
            gc.enable()
