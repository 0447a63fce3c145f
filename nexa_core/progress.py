"""Progress a user can read while a long stage runs: steps done of all, tokens/s so far and the time left, one line
every `progress_seconds` (a setting of each long stage) to the stage's log, which is the Dagster event log when
Dagster launched it (Pipes) and stderr otherwise; `nexa-run` prints these lines as they arrive. One format, written
by `progress_line` and read back by `parse_progress`."""

from __future__ import annotations

import re
import time

_LINE = re.compile(
    r"partition (?P<domain>\S+): (?P<stage>\w+) (?P<unit>step|batch) (?P<done>\d+)/(?P<total>\d+) \(\d+%\), "
    r"(?P<tokens_per_second>\d+(?:\.\d+)?) tokens/s, (?P<left>(?:\d+h)?(?:\d+m)?\d+s) left"
)
_DURATION = re.compile(r"(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?P<s>\d+)s")


def duration_text(seconds: float) -> str:
    """1h02m05s, 4m05s, 12s."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def progress_line(
    stage: str, domain: str, unit: str, done: int, total: int, tokens_per_second: float, seconds_left: float
) -> str:
    percent = 100 * done // total if total else 100
    return (
        f"partition {domain}: {stage} {unit} {done}/{total} ({percent}%), {tokens_per_second:.0f} tokens/s, "
        f"{duration_text(seconds_left)} left"
    )


def parse_progress(text: str) -> dict | None:
    """The fields of a progress line (stage, domain, unit, done, total, tokens_per_second, seconds_left), or None
    when the text is not one."""
    match = _LINE.search(text or "")
    if not match:
        return None
    left = _DURATION.fullmatch(match["left"])
    return {
        "stage": match["stage"],
        "domain": match["domain"],
        "unit": match["unit"],
        "done": int(match["done"]),
        "total": int(match["total"]),
        "tokens_per_second": float(match["tokens_per_second"]),
        "seconds_left": 3600 * int(left["h"] or 0) + 60 * int(left["m"] or 0) + int(left["s"]),
    }


class Progress:
    """Counts a stage's steps (or batches) and tokens, and logs a progress line when `every` seconds have passed
    since the last (0: at every update). Rates are over this process's own steps, so a resumed run's estimate is
    not flattered by the steps an earlier run did."""

    def __init__(self, stage: str, domain: str, total: int, log, every: float, unit: str = "step", done: int = 0):
        self.stage, self.domain, self.total, self.log, self.every, self.unit = stage, domain, total, log, every, unit
        self.first = self.done = done
        self.tokens = 0
        self.start = self.last = time.monotonic()

    def update(self, done: int, tokens: int = 0) -> None:
        """`done` of the total so far; `tokens` more since the last update."""
        self.done, self.tokens = done, self.tokens + tokens
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        steps = self.done - self.first
        left = (self.total - self.done) * elapsed / steps if steps else 0.0
        self.log(progress_line(self.stage, self.domain, self.unit, done, self.total, self.tokens / elapsed, left))
