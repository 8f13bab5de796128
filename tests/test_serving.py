import json
import threading
from types import SimpleNamespace

import numpy as np

from diffseg.experiments import train_trial
from diffseg.studies import logged_models

from .test_experiments import TINY


def test_a_served_segmenter_runs_torch_on_one_thread_of_its_own_whoever_calls_it(tmp_path, monkeypatch):
    """MLflow's scoring server loads on its main thread and predicts on worker threads: the segmenter's loading and
    every prediction run on the one thread it owns (two threads running torch = two OpenMP pools that slow each
    other down; ``python -m diffseg.bench threads`` measures it)."""
    result = train_trial({**TINY, "train.steps": 2, "output_dir": str(tmp_path / "trial")})
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**result.config, "output_dir": None}))
    ran_on = []
    load = logged_models.predictor_from
    monkeypatch.setattr(logged_models, "predictor_from", lambda *a: ran_on.append(threading.get_ident()) or load(*a))
    segmenter = logged_models.DiffsegSegmenter()
    segmenter.load_context(SimpleNamespace(artifacts={"config": str(config), "weights": result.artifacts["weights"]},
                                           model_config=None))
    predict = segmenter.predictor.predict
    segmenter.predictor.predict = lambda *a: ran_on.append(threading.get_ident()) or predict(*a)
    callers, outputs = [threading.get_ident()], []

    def request():
        callers.append(threading.get_ident())
        outputs.append(segmenter.predict(None, np.zeros((1, 32, 32, 3), np.uint8), {"ensemble": 2, "steps": 2}))

    request()
    for _ in range(2):
        caller = threading.Thread(target=request)
        caller.start()
        caller.join()
    assert len(ran_on) == 4 and len(set(ran_on)) == 1, "loading and the three requests ran on one thread"
    assert not set(ran_on) & set(callers), "not on the main thread nor on the callers' threads"
    assert [o.shape for o in outputs] == [(1, 2, 32, 32)] * 3
