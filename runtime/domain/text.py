"""Numbers and parameter sets as a person reads them in a log line: "lr 0.0007107, batch_size 32", not a dict of
16-digit floats. One place for the CLI, the step logs, tuning and the terminal progress."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def number(v: Any) -> str:  # noqa: ANN401
    """A float in four significant digits; anything else as it is."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def params_line(values: Mapping[str, Any]) -> str:
    """"lr 0.0007107, batch_size 32, hidden 79, dropout 0.1624"."""
    return ", ".join(f"{k} {number(v)}" for k, v in values.items())


UNSET = object()  # a parameter a run did not record, or cdl.yaml does not give


def value_text(v: Any, short: bool = True) -> str:  # noqa: ANN401
    """A parameter's value in a change: floats in four digits (short), true/false, lists as JSON, "unset",
    cut at 40 characters."""
    if v is UNSET:
        return "unset"
    if short and isinstance(v, float):
        return f"{v:.4g}"
    s = v if isinstance(v, str) and v else json.dumps(v, sort_keys=True)
    return s if len(s) <= 40 else s[:39] + "…"


def change_text(name: str, old: Any, new: Any) -> str:  # noqa: ANN401
    """"lr 0.001 → 0.0003182"; in full where four digits would show the two alike."""
    a, b = value_text(old), value_text(new)
    if a == b:
        a, b = value_text(old, False), value_text(new, False)
    return f"{name} {a} → {b}"


def changes_text(changed: Mapping[str, Any], sep: str = "; ", prefix: str = "") -> str:
    """{name: (old, new)} as "epochs 20 → 3; lr 0.001 → 0.002": a parameter change as the commit message, the CLI,
    the Parameters dialog, the runs dialog and the tuning dashboard all say it."""
    return sep.join(change_text(prefix + k, a, b) for k, (a, b) in changed.items())


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
