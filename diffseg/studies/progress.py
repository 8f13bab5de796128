"""A live one-line progress view for the driver: trials pending / running / done / failed, best so far,
elapsed and estimated remaining time."""

from __future__ import annotations

import math
import sys
import time

from ray import tune


class Progress(tune.Callback):
    def __init__(self, total: int, metric: str, mode: str, concurrency: int):
        self.total, self.metric, self.mode, self.concurrency = total, metric, mode, max(1, concurrency)
        self.t0 = time.monotonic()
        self.best: float | None = None
        self._finished: set[str] = set()
        self._failed: set[str] = set()
        self._durations: list[float] = []
        self._started: dict[str, float] = {}

    @property
    def done(self) -> int:
        return len(self._finished)

    @property
    def failed(self) -> int:
        return len(self._failed)

    def _line(self) -> str:
        ended = self._finished | self._failed
        running = len(set(self._started) - ended)
        pending = max(0, self.total - running - self.done - self.failed)
        elapsed = time.monotonic() - self.t0
        eta = "?"
        if self._durations:
            remaining = math.ceil((pending + running) / self.concurrency)
            eta = f"{remaining * sum(self._durations) / len(self._durations) / 60:.1f} min"
        best = "-" if self.best is None else f"{self.best:.4f}"
        return (f"[{elapsed / 60:5.1f} min] trials: {pending} pending, {running} running, {self.done} done, "
                f"{self.failed} failed | best {self.metric} {best} | ETA {eta}")

    def _print(self) -> None:
        print(self._line(), file=sys.stdout, flush=True)  # looked up per call: Tune pickles callbacks

    def on_trial_start(self, iteration, trials, trial, **info):
        self._started[trial.trial_id] = time.monotonic()
        self._failed.discard(trial.trial_id)  # a retried trial runs again
        self._print()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        v = result.get(self.metric)
        if isinstance(v, (int, float)) and math.isfinite(v):
            if self.best is None or (v > self.best if self.mode == "max" else v < self.best):
                self.best = float(v)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finished.add(trial.trial_id)
        self._durations.append(time.monotonic() - self._started.get(trial.trial_id, self.t0))
        self._print()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._failed.add(trial.trial_id)
        self._finished.discard(trial.trial_id)
        self._print()
