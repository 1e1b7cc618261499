"""Numbers and parameter sets as a person reads them in a log line: "lr 0.0007107, batch_size 32", not a dict of
16-digit floats. One place for the CLI, the step logs, tuning and the terminal progress."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def number(v: Any) -> str:  # noqa: ANN401
    """A float in four significant digits; anything else as it is."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def params_line(values: Mapping[str, Any]) -> str:
    """"lr 0.0007107, batch_size 32, hidden 79, dropout 0.1624"."""
    return ", ".join(f"{k} {number(v)}" for k, v in values.items())


def local_time(value: Any, seconds: bool = True, default: str = "") -> str:  # noqa: ANN401
    """A registry time (UTC: a datetime, naive ones being UTC, or its ISO text) as the CLI shows times: local,
    "2026-12-06 16:24:39" (to the minute with seconds=False); `default` where there is none."""
    from datetime import UTC, datetime

    if value is None or value == "":
        return default
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value[:19]
    t = value if value.tzinfo else value.replace(tzinfo=UTC)
    return t.astimezone().strftime("%Y-%m-%d %H:%M" + (":%S" if seconds else ""))
