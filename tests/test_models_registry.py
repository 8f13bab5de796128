"""The predictor behind the logged models and ``predict.py`` (the registry, pyfunc and ``predict.py`` end to end:
``tests/test_studies.py::test_tiny_study_through_ray_mlflow_server_and_parquet``)."""


import numpy as np
import pytest

from diffseg.experiments import train_trial
from diffseg.experiments.predictor import IncompatibleModel, Predictor
from diffseg.experiments.train import load_checkpoint

TINY = ("{model.architecture: ensemdiff, model.base_channels: 8, model.channel_mult: [1, 2], data.resolution: 32, "
        "train.steps: 6, train.val_every: 3, train.batch_size: 4, eval.ensemble: 2, eval.steps: 2, eval.val_steps: 2, "
        "eval.val_max_images: 3, eval.test_max_images: 3, eval.curve_points: 4, eval.curve_max_images: 3}")


@pytest.mark.parametrize("experiment", ["e1", "e2", "e3"])
def test_predictor_restores_the_original_size(tmp_path, experiment):
    r = train_trial({"experiment": experiment, "data.dataset": "synthetic-blob", "data.resolution": 16,
                     "model.base_channels": 8, "model.channel_mult": [1, 2], "train.steps": 2, "train.val_every": 2,
                     "train.batch_size": 2, "eval.ensemble": 3, "eval.steps": 2, "eval.val_steps": 2,
                     "eval.val_max_images": 2, "eval.test_max_images": 2, "eval.curve_points": 3,
                     "eval.curve_max_images": 2, "output_dir": str(tmp_path)})
    weights = load_checkpoint(tmp_path / "checkpoint" / "state.pt")["best"]["ema"]
    if experiment == "e3":
        with pytest.raises(IncompatibleModel, match="does not segment images"):
            Predictor(r.config, weights, "cpu")
        return
    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    p = Predictor(r.config, weights, "cpu").predict(image, ensemble=3)
    assert p.probability.shape == p.std.shape == p.mask.shape == (37, 53) and p.members == 3
    assert p.probability.min() >= 0 and p.probability.max() <= 1 and p.std.min() >= 0
