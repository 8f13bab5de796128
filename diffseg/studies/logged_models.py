"""Trained segmenters in MLflow: each E1/E2 trial logs its selected EMA weights as a pyfunc model
(``mlflow.pyfunc.load_model(uri).predict(images)`` -> probabilities and ensemble std), and at the end of a study
the best trial per dataset, chosen on validation, is registered as ``diffseg-<study>-<dataset>``.

Input: a batch of RGB uint8 images (B, H, W, 3) of one size (``predict.py`` handles folders of any sizes).
Output: float32 (B, 2, H, W): channel 0 the mean foreground probability of the ensemble, channel 1 its std.
Inference params: ``ensemble``, ``steps``, ``sampler``, ``seed`` (defaults: the trial's evaluation settings).
Load-time option: ``model_config={"device": ...}`` (default ``auto``: CUDA when available).
"""

from __future__ import annotations

import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models.signature import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

from ..experiments.kinds import SEGMENTING
from ..experiments.predictor import IncompatibleModel, Predictor
from ..experiments.result import FINISHED, TrialResult
from ..experiments.selection import best_trials
from ..files import safe_name

MODEL_NAME = "model"  # the artifact path of the logged model in a trial's run
MODEL_URI_TAG = "diffseg.model_uri"
REGISTERED_FROM_TAG = "diffseg.run_id"


MARK = "diffseg_segmenter"  # in the MLmodel metadata of every diffseg model: its format version
FORMAT = 1


def predictor_from(config_path: str | Path, weights_path: str | Path, device: str = "auto") -> Predictor:
    """The segmenter of a logged model's two artifacts; the weights are loaded as tensors only."""
    config = json.loads(Path(config_path).read_text())
    return Predictor(config, torch.load(weights_path, weights_only=True), device=device)


def read_model_folder(folder: Path, device: str = "auto") -> Predictor:
    """A diffseg model from its downloaded folder without unpickling anything: ``MLmodel`` (YAML) must carry the
    diffseg mark and name the two artifacts, which are read as JSON and as tensors (``python_model.pkl`` is never
    opened). Anything else is refused with ``IncompatibleModel`` before any of its files is deserialised."""
    import yaml

    try:
        meta = yaml.safe_load((folder / "MLmodel").read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise IncompatibleModel(f"{folder}: no readable MLmodel ({exc})") from None
    pyfunc = (meta.get("flavors") or {}).get("python_function") or {}
    arts = pyfunc.get("artifacts") or {}
    if (meta.get("metadata") or {}).get(MARK) != FORMAT or not {"config", "weights"} <= set(arts):
        raise IncompatibleModel(f"{folder}: not a diffseg segmentation model (logged by a study's E1/E2 trial); "
                                "refused before anything in it was loaded")
    paths = {k: (folder / arts[k]["path"]).resolve() for k in ("config", "weights")}
    if any(folder.resolve() not in p.parents for p in paths.values()):
        raise IncompatibleModel(f"{folder}: MLmodel names artifacts outside the model folder")
    return predictor_from(paths["config"], paths["weights"], device)


class DiffsegSegmenter(mlflow.pyfunc.PythonModel):
    """Loads and predicts on one thread of its own. MLflow's scoring server loads a model on its main thread and
    answers each request on one of its executor's threads (``asyncio.to_thread``); libgomp, torch's OpenMP on
    Linux, keeps one thread pool per thread that ran torch, and two pools on the machine's CPUs cut each other's
    barrier spin-waits short. Measured on 2 CPUs after a burst of 4 concurrent requests: 425 against 544 ms per
    request through ``mlflow models serve``, 405 against 771 ms in-process (``python -m diffseg.bench threads``)."""

    def load_context(self, context):
        self._torch_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffseg-torch")
        # a load-time option: mlflow.pyfunc.load_model(uri, model_config={"device": "cuda:1"})
        self.predictor = self._torch_thread.submit(
            predictor_from, context.artifacts["config"], context.artifacts["weights"],
            (context.model_config or {}).get("device", "auto")).result()

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> np.ndarray:
        return self._torch_thread.submit(self._predict, model_input, params or {}).result()

    def _predict(self, model_input, p: dict[str, Any]) -> np.ndarray:
        if isinstance(model_input, dict):  # a named tensor input arrives as {name: array}
            model_input = next(iter(model_input.values()))
        images = np.asarray(model_input)
        if images.ndim == 3:
            images = images[None]
        out = []
        for img in images.astype(np.uint8):
            r = self.predictor.predict(img, p.get("ensemble"), p.get("steps"), p.get("sampler"), int(p.get("seed", 0)))
            out.append(np.stack([r.probability, r.std]))
        return np.stack(out).astype(np.float32)


def signature(cfg: dict[str, Any]) -> ModelSignature:
    ev = cfg["eval"]
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]),  # RGB images (B, H, W, 3)
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 2, -1, -1))]),  # probability and std (B, 2, H, W)
        params=ParamSchema([ParamSpec("ensemble", "long", int(ev["ensemble"])),
                            ParamSpec("steps", "long", int(ev["steps"])),
                            ParamSpec("sampler", "string", str(ev["sampler"])), ParamSpec("seed", "long", 0)]))


def log_trial_model(tracking_uri: str, run_id: str, result: TrialResult) -> str | None:
    """Log the trial's selected EMA weights as a pyfunc model in its run; return the model URI (None when the
    trial has no segmenter: E3/E4 or no finished evaluation)."""
    if result.status not in FINISHED or result.config["experiment"] not in SEGMENTING:
        return None
    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path, w_path = Path(tmp) / "config.json", result.artifacts["weights"]
        cfg_path.write_text(json.dumps({**result.config, "output_dir": None}))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME, python_model=DiffsegSegmenter(), artifacts={"config": str(cfg_path),
                                                                           "weights": str(w_path)},
                signature=signature(result.config), model_config={"device": "auto"},
                pip_requirements=[f"diffseg=={metadata.version('diffseg')}", f"torch=={torch.__version__}"],
                metadata={MARK: FORMAT, "dataset_hash": result.dataset_hash, "selection": result.selection,
                          "schedule": json.dumps(result.schedule)})
    MlflowClient(tracking_uri).set_tag(run_id, MODEL_URI_TAG, info.model_uri)
    return info.model_uri


def register_best(tracking_uri: str, study: str, trials: pd.DataFrame) -> list[str]:
    """Register the best trial per dataset (``experiments.selection.best_trials``: among the segmenting trials)
    that has a logged model as ``diffseg-<study>-<dataset>``; a trial already registered (a resumed study) is not
    registered again."""
    client = MlflowClient(tracking_uri)
    done = []
    for _, best in best_trials(trials).iterrows():
        dataset, metric = best.dataset, best.selection_metric
        uri = client.get_run(best.run_id).data.tags.get(MODEL_URI_TAG)
        if uri is None:
            continue
        name = safe_name(f"diffseg-{study}-{dataset}", 200, "-_.")
        if any(v.tags.get(REGISTERED_FROM_TAG) == best.run_id or v.run_id == best.run_id
               for v in client.search_model_versions(f"name = '{name}'")):
            done.append(name)
            continue
        mlflow.set_tracking_uri(tracking_uri)
        version = mlflow.register_model(uri, name, tags={REGISTERED_FROM_TAG: best.run_id,
                                                         "selection_metric": metric,
                                                         metric: str(best.best_val), "arm": str(best.arm)})
        client.update_registered_model(name, description=f"best {study} trial on {dataset} by {metric}")
        done.append(f"{name} v{version.version}")
    return done
