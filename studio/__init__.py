"""The CDL Studio desktop app (PySide6 + qasync). Uses only runtime's public API."""
