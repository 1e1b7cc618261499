"""The CDL Studio desktop app (PySide6 + qasync). Uses only runtime's public API."""

from studio.refcounts import guard_singletons

guard_singletons()  # before any Qt call: studio/refcounts.py says why
