"""The trial-result contract: what ``train_trial`` returns and what tracking, export, report and the trained-curve
reader read. Statuses, curve kinds, which weights are evaluated, a trial's files and its timing phases are
defined here once and imported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

# --- statuses of a trial (the exported ``status`` column) ---------------------------------------------------------
OK = "ok"
EARLY_STOPPED = "early_stopped"
NAN_LOSS = "nan_loss"  # the loss became NaN/inf: the trial ends without evaluation
ERROR = "error"  # the trial raised (set by the export from the MLflow run status; never returned by a trial)
FINISHED = (OK, EARLY_STOPPED)  # trials with evaluated metrics
STATUSES = (OK, EARLY_STOPPED, NAN_LOSS, ERROR)

# --- curve kinds (``curves.parquet`` ``kind``) ---------------------------------------------------------------------
MASK_ERROR = "mask_error"  # normalised mask-prediction error over t (E2 with the image, E3 without)
IMAGE_ERROR = "image_error"  # image-prediction error over t (E4)
TRAIN_LOSS = "train_loss"  # eps-MSE over t, binned
TRAIN_LOSS_WEIGHTED = "train_loss_weighted"  # the loss actually optimised over t, binned
CURVE_KINDS = (MASK_ERROR, IMAGE_ERROR, TRAIN_LOSS, TRAIN_LOSS_WEIGHTED)

# --- which weights are evaluated -----------------------------------------------------------------------------------
BEST_VAL = "best_val"  # the EMA weights of the best validation
FINAL_EMA = "final_ema"  # the last EMA weights (data.retrain: validation was trained on)


# --- files of a trial ------------------------------------------------------------------------------------------
RESULT_ARTIFACT = "result.json"  # the TrialResult of a child run, as JSON (what the export reads)
WEIGHTS_FILE = "selected_weights.pt"  # in a trial's output folder: the selected EMA weights (``selection``)
EMA_CHECKPOINTS = "ema_checkpoints"  # in a trial's output folder: step{N}.pt, EMA weights at train.keep_checkpoints

# --- timing phases of a trial (``TrialResult.timing``, seconds; ``time_<phase>`` in trials.parquet) -----------------
TRAIN_STEPS, VALIDATION, CHECKPOINT = "train_steps_s", "validation_s", "checkpoint_s"
FINAL_ENSEMBLE, CURVES = "final_ensemble_s", "curves_s"  # the evaluation phases (a re-evaluation measures these)
MLFLOW, MODEL_LOGGING, RAY_REPORT = "mlflow_s", "model_logging_s", "ray_report_s"  # the platform's, in a study
TRAINING_PHASES = (TRAIN_STEPS, VALIDATION, CHECKPOINT, FINAL_ENSEMBLE, CURVES)
PLATFORM_PHASES = (MLFLOW, MODEL_LOGGING, RAY_REPORT)
TRIAL_PHASE_LABELS = {TRAIN_STEPS: "training steps", VALIDATION: "validation sampling",
                      FINAL_ENSEMBLE: "final ensemble", CURVES: "analysis curves", CHECKPOINT: "checkpoints",
                      MLFLOW: "MLflow logging", MODEL_LOGGING: "model logging", RAY_REPORT: "Ray reports"}


@dataclass
class Curve:
    kind: str
    conditioned: bool  # the model saw its condition (the image, for E1/E2)
    t: list[float]
    value: list[float]


@dataclass
class TrialResult:
    status: str
    config: dict[str, Any]  # TrialConfig.to_dict()
    dataset: str
    dataset_hash: str
    step: int
    n_params: int
    selection_metric: str
    selection: str  # BEST_VAL | FINAL_EMA
    best_step: int
    best_val: float | None
    train_time_s: float
    output_dir: str
    schedule: dict[str, Any]
    eval_time_s: float | None = None
    threads: int | None = None  # torch threads the trial ran with (its CPU share)
    timing: dict[str, float] = field(default_factory=dict)  # seconds per phase (train steps, validation, ...)
    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    curves: list[Curve] = field(default_factory=list)
    per_image: list[dict[str, Any]] = field(default_factory=list)
    reliability: list[dict[str, Any]] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {list(STATUSES)}")
        self.curves = [c if isinstance(c, Curve) else Curve(**c) for c in self.curves]
        for c in self.curves:
            if c.kind not in CURVE_KINDS:
                raise ValueError(f"curve kind {c.kind!r} is not one of {list(CURVE_KINDS)}")

    def curve(self, kind: str, conditioned: bool | None = None) -> Curve | None:
        for c in self.curves:
            if c.kind == kind and (conditioned is None or c.conditioned == conditioned):
                return c
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def status_summary(statuses) -> str:
    """"3 ok, 1 early stopped, 1 failed, 0 NaN loss of 5": the counts of an iterable of statuses, in words."""
    s = list(statuses)
    words = {OK: "ok", EARLY_STOPPED: "early stopped", ERROR: "failed", NAN_LOSS: "NaN loss"}
    parts = [f"{sum(x == k for x in s)} {w}" for k, w in words.items()]
    other = sum(x not in words for x in s)
    return ", ".join(parts) + (f", {other} unfinished" if other else "") + f" of {len(s)}"
