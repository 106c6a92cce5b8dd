"""A progress line on stderr: events processed, rate and ETA, without a dependency.

On a terminal the line is rewritten in place (`\\r`) at most 10 times a second; otherwise (a log
file, CI) a full line is printed every `interval_s` seconds, so logs stay readable.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO


def format_duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '1 h 02 min' (pure)."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def render(phase: str, done: int, total: int | None, elapsed_s: float, unit: str = "events") -> str:
    """One progress line: '<phase>: 1,200/5,000 events (24%)  3,100 events/s  ETA 1 s' (pure).

    Without a total (or before anything is done) it says how long the phase has been running.
    """
    if not total or done <= 0:
        about = f" {total:,} {unit}" if total else ""
        return f"{phase}:{about} ... {format_duration(elapsed_s)}"
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    line = f"{phase}: {done:,}/{total:,} {unit} ({100 * done / total:.0f}%)"
    if rate > 0:
        line += f"  {rate:,.0f} {unit}/s"
        if done < total:
            line += f"  ETA {format_duration((total - done) / rate)}"
    return line + f"  elapsed {format_duration(elapsed_s)}"


class Progress:
    """`update(done)` as work advances, `finish()` at the end of a phase."""

    def __init__(
        self,
        phase: str,
        total: int | None,
        *,
        stream: TextIO | None = None,
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        unit: str = "events",
    ) -> None:
        self.phase, self.total, self.unit = phase, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = 0.1 if self.tty else interval_s
        self.clock = clock
        self.started = clock()
        self.done = 0
        self._shown_at: float | None = None
        self._lock = threading.Lock()
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    def update(self, done: int, *, force: bool = False) -> None:
        with self._lock:
            self.done = done
            now = self.clock()
            if not force and self._shown_at is not None and now - self._shown_at < self.interval_s:
                return
            self._shown_at = now
            line = render(self.phase, done, self.total, now - self.started, self.unit)
            if self.tty:
                self.stream.write(f"\r{line}\x1b[K")
            else:
                self.stream.write(line + "\n")
            self.stream.flush()

    def tick_while_blocked(self) -> Progress:
        """Show the line every interval from a thread as well, for a phase whose reports are
        late or sparse (the Flink feature run: nothing before its consumer's first commit)."""

        def tick() -> None:
            while not self._stop.wait(1.0 if self.tty else self.interval_s):
                self.update(self.done, force=True)

        self.update(0, force=True)
        self._ticker = threading.Thread(target=tick, name="rtml-progress", daemon=True)
        self._ticker.start()
        return self

    def finish(self, done: int | None = None) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)
        self.update(self.done if done is None else done, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
