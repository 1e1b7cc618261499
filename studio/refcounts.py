"""A guard against a reference-count bug in PySide6 6.12.0 on Python 3.11.

Every PySide6 6.12.0 method that returns nothing (QPainter.setPen, QWidget.setEnabled, QPen.setWidth, ...)
hands Python a None it did not count: each call takes one reference from None. Python 3.12 made None immortal
(PEP 683), so there the bug is harmless; on 3.11, which this project pins, None's count reaches zero and the
process dies with "Fatal Python error: none_dealloc: deallocating None". The studio died after about 130 repaints
of the flowchart (some 400 such calls each): minutes of use.

The guard gives None (and, as cheap insurance, True, False, Ellipsis and NotImplemented) a count of 2**48 more,
which is what immortality amounts to: some 3 * 10**14 stray calls before it could matter. Nothing else changes.
`import studio` applies it, before any panel paints. Remove it once the pins move to Python 3.12 or to a PySide6
that counts None."""

from __future__ import annotations

import sys

EXTRA = 1 << 48


def guard_singletons() -> bool:
    """Give the interpreter's singletons EXTRA references (once: a count already above EXTRA is left alone).
    Whether it did anything: not on Python 3.12+ (immortal already) or on another interpreter than CPython."""
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    import ctypes

    for obj in (None, True, False, Ellipsis, NotImplemented):
        count = ctypes.c_ssize_t.from_address(id(obj))  # ob_refcnt: the first field of every CPython object
        if count.value < EXTRA:
            count.value += EXTRA
    return True
