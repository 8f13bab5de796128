"""Re-evaluation from saved weights: the selected EMA weights of every E1/E2 trial evaluated again, without
retraining, give the numbers of the end of training and rewrite the runs and exports."""

import os
import pickle

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from diffseg.folder import StudyFolder
from diffseg.studies import state_seal
from diffseg.studies.cli import main as study_main
from diffseg.studies.logged_models import REGISTERED_FROM_TAG
from diffseg.studies.reevaluate import main as reevaluate_main
from diffseg.studies.state_seal import SEAL_FILE, user_key
from tests.test_studies import tiny_spec

ARMS = """
    - {label: ff, experiment: e1}
    - {label: diff, diffusion.weighting: uniform}
    - {label: mask_only, experiment: e3}"""


class Planted:
    """A pickle that runs code when loaded (it creates ``path``)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


@pytest.mark.slow(seconds=33)
def test_reevaluate_reproduces_the_final_evaluation_and_rewrites_the_exports(tmp_path, ray_session, capsys):
    out = tmp_path / "runs"
    spec = tiny_spec(tmp_path / "reeval.yaml", ARMS)
    assert study_main(["--study", str(spec), "--out", str(out)]) == 0
    assert (out / "ray" / "reeval" / "plan.json").exists()
    trials = out / "exports" / "reeval" / "trials.parquet"
    before = pd.read_parquet(trials).set_index("arm")
    images = out / "exports" / "reeval" / "images.parquet"
    pd.read_parquet(images).iloc[:0].to_parquet(images)  # a stale export, to see it rewritten
    assert reevaluate_main(["--study", "reeval", "--out", str(out)]) == 0
    after = pd.read_parquet(trials).set_index("arm")
    for arm in ("ff", "diff"):
        for col in ("test_iou", "test_ece", "test_ece_softmean", "test_member_error", "best_val"):
            assert after.loc[arm, col] == pytest.approx(before.loc[arm, col], rel=1e-6, abs=1e-9), (arm, col)
    assert len(pd.read_parquet(images)) == len(pd.read_parquet(images).drop_duplicates()) > 0
    client = MlflowClient(StudyFolder(out).store_uri)
    tagged = {r: client.get_run(r).data.tags.get("diffseg.reevaluated") for r in after.run_id}
    assert tagged[after.loc["ff", "run_id"]] and tagged[after.loc["diff", "run_id"]]
    assert tagged[after.loc["mask_only", "run_id"]] is None  # E3 samples no ensemble: left as it was
    # the mixed study (E1 + E2 + E3 on one dataset) registered its segmenting winner, not the E3 trial
    (version,) = client.search_model_versions("name = 'diffseg-reeval-synthetic-blob'")
    seg = after[after.experiment.isin(["e1", "e2"])]
    assert version.tags[REGISTERED_FROM_TAG] == seg.run_id[seg.best_val.idxmax()]


    # Ray's state is restored only under this user's seal: a planted tuner.pkl is refused before it is unpickled
    # (the parent run keeps its status), an unsealed state needs --trust-state, and the seal's key is not in it
    tuner, parent = out / "ray" / "reeval" / "tuner.pkl", after.run_id.iloc[0]
    parent = client.get_run(parent).data.tags["mlflow.parentRunId"]
    good, marker = tuner.read_bytes(), tmp_path / "ran"
    tuner.write_bytes(pickle.dumps(Planted(str(marker))))
    assert study_main(["--study", str(spec), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "tuner.pkl" in err and "--trust-state" in err and not marker.exists(), err
    assert client.get_run(parent).info.status == "FINISHED"
    tuner.write_bytes(good)
    (out / "ray" / "reeval" / SEAL_FILE).unlink()
    assert study_main(["--study", str(spec), "--out", str(out), "--resume"]) == 2
    assert "no diffseg seal" in capsys.readouterr().err
    assert study_main(["--study", str(spec), "--out", str(out), "--resume", "--trust-state"]) == 0
    assert state_seal.problem(out / "ray" / "reeval") is None  # sealed again, with this user's key
    assert user_key() not in good and user_key() not in tuner.read_bytes()
    capsys.readouterr()

    # the plan is a stage: --resume with an edited study file is refused, naming what changed
    spec.write_text(spec.read_text().replace("{label: diff, diffusion.weighting: uniform}",
                                             "{label: diff, diffusion.weighting: min_snr}"))
    assert study_main(["--study", str(spec), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--resume refused" in err and "study file" in err and "diffusion.weighting" in err, err


def test_reevaluate_without_the_study_exits_2(tmp_path, capsys):
    assert reevaluate_main(["--study", "nope", "--out", str(tmp_path)]) == 2
    assert "no MLflow store" in capsys.readouterr().err and not list(tmp_path.iterdir())  # no store created
    uri = f"sqlite:///{tmp_path / 'other.db'}"
    assert reevaluate_main(["--study", "nope", "--out", str(tmp_path), "--tracking-uri", uri]) == 2
    assert "nope" in capsys.readouterr().err
