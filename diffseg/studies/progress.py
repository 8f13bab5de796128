"""The driver's Tune hooks: a live one-line progress view (trials pending / running / done / failed, best so far,
elapsed and estimated remaining time), a watch that ends the study when its tracking server stops answering, and
the seal that follows Ray's saves of its state (``state_seal``)."""

from __future__ import annotations

import math
import os
import signal
import sys
import time

from ray import tune

from ..experiments.kinds import SELECTION
from ..folder import is_server
from . import tracking
from .state_seal import Sealer


class Progress(tune.Callback):
    def __init__(self, total: int, concurrency: int):
        self.total, self.concurrency = total, max(1, concurrency)
        self.t0 = time.monotonic()
        self.best: dict[str, float] = {}  # selection metric -> best value so far (each with its own mode)
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
        best = ", ".join(f"{k} {v:.4f}" for k, v in sorted(self.best.items())) or "-"
        return (f"[{elapsed / 60:5.1f} min] trials: {pending} pending, {running} running, {self.done} done, "
                f"{self.failed} failed | best {best} | ETA {eta}")

    def _print(self) -> None:
        print(self._line(), file=sys.stdout, flush=True)  # looked up per call: Tune pickles callbacks

    def on_trial_start(self, iteration, trials, trial, **info):
        self._started[trial.trial_id] = time.monotonic()
        self._failed.discard(trial.trial_id)  # a retried trial runs again
        self._print()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        for sel in set(SELECTION.values()):
            v = result.get(sel.metric)
            if isinstance(v, (int, float)) and math.isfinite(v) and sel.better(v, self.best.get(sel.metric)):
                self.best[sel.metric] = float(v)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finished.add(trial.trial_id)
        self._durations.append(time.monotonic() - self._started.get(trial.trial_id, self.t0))
        self._print()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._failed.add(trial.trial_id)
        self._finished.discard(trial.trial_id)
        self._print()


class OutageWatch(tune.Callback):
    """Ends the study like a Ctrl-C when its HTTP tracking server stops answering (probed at most every
    ``every_s`` seconds): Tune saves the experiment with the unfinished trials restorable, so ``--resume`` continues
    them, instead of trials starting one after another only to fail on MLflow."""

    def __init__(self, tracking_uri: str, every_s: float = 10.0):
        self.uri, self.every_s, self.down, self._last = tracking_uri, every_s, False, 0.0

    def on_step_begin(self, iteration, trials, **info):
        if self.down or not is_server(self.uri) \
                or time.monotonic() - self._last < self.every_s:
            return
        self._last = time.monotonic()
        if tracking.probe(self.uri) is not None:
            self.down = True
            os.kill(os.getpid(), signal.SIGINT)  # Tune's own interrupt path: stop, save state, return


class SealState(tune.Callback):
    """Seals the tune dir's Ray state after each loop iteration (Ray saves it within the iteration, before
    ``on_step_end``) and at the experiment's end; ``runner`` also seals once the Tuner exists (``tuner.pkl``) and
    after ``fit`` returns. After an iteration with a trial event (Ray writes a trial's ``params.pkl`` when it starts,
    its ``error.pkl`` when it fails) the whole state is checked; otherwise its top level only
    (``Sealer.seal_if_moved``: Ray's experiment-state saves), so an idle iteration costs one directory listing
    however many trials the study has. Ray copies its saved state into the tune dir on a background thread: the
    staged files are sealed in the iteration that saved them (``Sealer``), before the copy lands."""

    _event = True  # also for a callback unpickled from the tuner.pkl of a study begun by an earlier diffseg

    def __init__(self, sealer: Sealer):
        self.sealer = sealer

    def _trial_event(self, *args, **info):
        self._event = True

    on_trial_start = on_trial_restore = on_trial_save = on_trial_result = on_trial_complete = _trial_event
    on_trial_recover = on_trial_error = on_checkpoint = _trial_event

    def on_step_end(self, iteration, trials, **info):
        if self._event:
            self.sealer.seal(_experiment_dir(trials), _staging_dir(trials))
        else:
            self.sealer.seal_if_moved(_experiment_dir(trials), _staging_dir(trials))
        self._event = False

    def on_experiment_end(self, trials, **info):
        self.sealer.seal(_experiment_dir(trials), _staging_dir(trials))


def _experiment_dir(trials) -> str | None:
    """Where the experiment is now (a restored study may have moved; its callbacks come from ``tuner.pkl``)."""
    return trials[0].storage.experiment_fs_path if trials else None


def _staging_dir(trials) -> str | None:
    """Where Tune saves its experiment state on the driver before its background copy into the tune dir."""
    return trials[0].storage.experiment_driver_staging_path if trials else None
