"""What every demo step shares: the `Step` it returns, the `DemoFailed` it raises and the
`Say` callback that prints its line. Kept apart so that `steps`, `data` and `flow` all import it
without importing each other in a circle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Say = Callable[[str], None]


class DemoFailed(RuntimeError):
    """A step of the demo failed; the message names the step and why."""


@dataclass
class Step:
    """One step's result: the line it printed and its facts (JSON values, image names)."""

    key: str
    line: str
    data: dict[str, Any] = field(default_factory=dict)
