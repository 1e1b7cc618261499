"""The registry store (SQLModel on SQLite or PostgreSQL). See `Store` for its contract."""

from __future__ import annotations

from runtime.store.store import DATABASE_URL_ENV, Store

__all__ = ["DATABASE_URL_ENV", "Store"]
