"""Terminal output: aligned tables and throttled progress lines on stderr."""

from __future__ import annotations

import sys
import time
from typing import Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "  ") -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [indent + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def sci(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


class Progress:
    """Prints "label  step k/N (p%)" for runs that take longer than `after` seconds, at most every
    `every` seconds, to stderr (overwriting the line on a terminal)."""

    def __init__(self, stream=None, after: float = 2.0, every: float = 2.0, enabled: bool = True):
        self.stream = stream if stream is not None else sys.stderr
        self.after, self.every, self.enabled = after, every, enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started: dict[str, float] = {}
        self.last = 0.0

    def __call__(self, record, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        label = record.spec.label
        start = self.started.setdefault(label, now)
        finished = done >= total
        if now - start < self.after or (now - self.last < self.every and not finished):
            return
        self.last = now
        loss = record.losses[-1] if len(record.losses) else float("nan")
        text = f"  {label}: step {done}/{total} ({100 * done / total:.0f}%), loss {loss:.4g}, {now - start:.0f} s"
        if self.tty:
            self.stream.write("\r" + text.ljust(78) + ("\n" if finished else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
