"""CDL Studio's headless engine. The public API is `runtime.api`; importing `runtime` loads nothing heavy."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
