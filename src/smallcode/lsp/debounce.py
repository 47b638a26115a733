"""The adaptive debounce: how long an automatic completion request waits before it goes to the model.

Waiting only pays when another keystroke is likely to come before the model could answer: the
request would be superseded anyway, and while it waits it costs nothing. So the wait is decided from
two running averages, the user's time between keystrokes while typing (gaps longer than ``pause_s``
are pauses, not typing) and the model's time to answer:

* the model answers faster than the user types: no wait, the answer is shown before the next key
  (a model not timed yet counts as fast);
* the user types faster than the model answers, or faster than ``min_s`` between edits (key repeat,
  a paste in pieces, a script), or it is the first edit seen: wait about one and a half keystroke gaps
  (at least ``min_s``, at most ``max_s``) counted from the last edit, so a burst of edits sends one
  request, for its last one;
* a pause fires at once: once the time since the last edit passes that wait, there is nothing left
  to wait for.

While requests keep being superseded in their wait, the model's time is not measured; each such
supersede lowers the estimate a little (``superseded``), so one slow answer (a cold start) does not
keep every later request waiting.

An invoked request (the user asked) never waits. Times are passed in, so the rule is a plain
function of them (the tests feed it made-up clocks).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Debounce:
    min_s: float = 0.03
    """Shortest wait while the user types faster than the model answers."""
    max_s: float = 0.25
    """Longest wait."""
    pause_s: float = 0.6
    """A gap between edits longer than this is a pause, not typing."""
    factor: float = 1.5
    """The wait in keystroke gaps."""
    gap_s: float | None = None
    """Running average of the gap between keystrokes while typing (None: not seen yet)."""
    answer_s: float | None = None
    """Running average of the model's time to answer (None: not seen yet)."""
    last_edit: float | None = None

    def edited(self, now: float) -> None:
        """An edit happened at ``now``."""
        if self.last_edit is not None:
            gap = now - self.last_edit
            if 0 <= gap < self.pause_s:
                self.gap_s = gap if self.gap_s is None else 0.7 * self.gap_s + 0.3 * gap
        self.last_edit = now

    def answered(self, seconds: float) -> None:
        """The model answered a request in ``seconds``."""
        self.answer_s = seconds if self.answer_s is None else 0.7 * self.answer_s + 0.3 * seconds

    def superseded(self) -> None:
        """A request was superseded while it waited: its model time stays unknown; trust the old one less."""
        if self.answer_s is not None:
            self.answer_s *= 0.8

    def wait(self, now: float, *, invoked: bool = False) -> float:
        """Seconds to wait, from ``now``, before sending the request."""
        if invoked or self.last_edit is None:
            return 0.0
        if self.gap_s is not None and self.gap_s >= self.min_s and (self.answer_s or 0.0) <= self.gap_s:
            return 0.0
        gap = self.gap_s if self.gap_s is not None else self.min_s
        target = min(self.max_s, max(self.min_s, self.factor * gap))
        return max(0.0, target - (now - self.last_edit))
