"""Hostile and careless input, round two: each case through the command a user runs, with its exit code, its
message and what it wrote (nothing, for a refusal)."""

import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from diffseg.data.__main__ import main as data_main
from diffseg.data.io import read_image
from diffseg.experiments.config import TrialConfig
from diffseg.files import atomic_path
from diffseg.studies import cli
from diffseg.studies.predict import main as predict_main

GOOD = "description: x\nexperiment: e2\ndatasets: [synthetic-blob]\n"
CHAIN = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 7))


def _write(path, text: str | bytes):
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize(("name", "text", "message"), [
    ("...yaml", GOOD, "the study name '..'"),
    ("bomb.yaml", "l0: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + CHAIN + GOOD, "expands to"),
    ("latin.yaml", b"description: \xff\xfe\n", "not UTF-8"),
    ("nul.yaml", GOOD + 'grid:\n  w:\n    - {label: "a\\u0000b", diffusion.weighting: uniform}\n',
     "control characters"),
    ("huge.yaml", GOOD + "grid:\n" + "".join(f"  a{i}: [{', '.join(f'{{train.seed_{i}_{j}: 1}}' for j in range(10))}]\n"
                                              for i in range(6)), "trials planned"),
    ("big.yaml", GOOD + "#" * (1 << 20) + "\n", "a study file may have at most"),
    ("clip.yaml", GOOD + "fixed: {train.grad_clip: -1}\n", "train.grad_clip: must be >= 0"),
    ("nan.yaml", GOOD + "fixed: {train.lr: .nan}\n", "train.lr: must be a finite number"),
    ("mult.yaml", GOOD + "fixed: {model.channel_mult: [1, 2, -3]}\n", "model.channel_mult: must be >= 1"),
    ("heads.yaml", GOOD + "fixed: {model.heads: 0}\n", "model.heads: must be >= 1"),
    ("res.yaml", GOOD + "fixed: {data.resolution: 100000}\n", "data.resolution: must be >= 8 and <= 4096"),
    ("T.yaml", GOOD + "fixed: {diffusion.T: 1000000000000}\n", "diffusion.T: must be >= 2"),
    ("device.yaml", GOOD + "fixed: {train.device: bogus}\n", "is not a torch device"),
    ("eta.yaml", GOOD + "fixed: {eval.sampler: dpmpp_2m, eval.eta: 1.0}\n", "takes no eta"),
    ("gama.yaml", GOOD + "fixed: {diffusion.weighting: min_snr, diffusion.weighting_params: {gama: 5}}\n",
     "did you mean 'gamma'"),
    ("levels.yaml", GOOD + "fixed: {data.resolution: 36, model.channel_mult: [1, 2, 2, 2]}\n", "multiple of 8"),
])
def test_bad_study_files_exit_2_naming_the_problem_and_write_nothing(tmp_path, capsys, name, text, message):
    spec = _write(tmp_path / name, text)
    out = tmp_path / "out"
    assert cli.main(["--study", str(spec), "--dry-run", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err[:800]
    assert len(err) < 2000, "the message does not print the expanded document"
    assert not out.exists()


def test_merge_keys_work_with_the_duplicate_key_loader(tmp_path, capsys):
    spec = _write(tmp_path / "merge.yaml", GOOD + "fixed: &f {train.steps: 5}\nbudgets:\n  smoke:\n    <<: *f\n"
                                                  "    train.val_every: 5\n")
    assert cli.main(["--study", str(spec), "--dry-run", "--json", "--out", str(tmp_path / "o")]) == 0
    assert '"train.val_every": 5' in capsys.readouterr().out
    dup = _write(tmp_path / "dup.yaml", GOOD + "fixed: {train.steps: 5, train.steps: 6}\n")
    assert cli.main(["--study", str(dup), "--dry-run", "--out", str(tmp_path / "o")]) == 2
    assert "duplicate key 'train.steps'" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--gpus-per-trial", "1"], "this machine has no GPU"),
    (["--set", "train.device=cuda"], "no CUDA device"),
    (["--out", "/proc/diffseg"], "kernel file systems"),
])
def test_resources_this_machine_lacks_are_refused_before_ray(tmp_path, capsys, args, message):
    base = ["--study", "weighting_schedules", "--dataset", "synthetic-blob", "--seed", "0"]
    out = ["--out", str(tmp_path / "o")] if "--out" not in args else []
    assert cli.main([*base, *out, *args]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_out_in_a_symlink_loop_is_refused(tmp_path, capsys):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    assert cli.main(["--study", "weighting_schedules", "--dry-run", "--out", str(tmp_path / "a" / "x")]) == 2
    assert "--out" in capsys.readouterr().err


def test_numeric_settings_are_range_checked_where_they_are_declared():
    for key, bad in (("train.weight_decay", 1e308), ("eval.eta", float("nan")), ("train.lr", 0.0),
                     ("eval.ece_bins", 1), ("data.val_fraction", 1.5)):
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            TrialConfig.from_dict({key: bad}).validate()
    TrialConfig.from_dict({"train.grad_clip": 0.0}).validate()  # 0: no clipping


def _images(folder, names):
    folder.mkdir(parents=True)
    for n in names:
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / n)


@pytest.mark.parametrize(("out", "args", "message"), [
    ("images", ["--overwrite"], "outputs never go where inputs are"),
    ("images/sub", [], "outputs never go where inputs are"),
    ("o", ["--device", "bogus"], "is not a torch device"),
    ("o", ["--device", "cuda"], "no CUDA device"),
    ("o", [], "no MLflow store"),
])
def test_predict_refuses_before_loading_or_writing(tmp_path, capsys, monkeypatch, out, args, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _images(tmp_path / "images", ["a.png", "a_mask.png"])
    before = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert predict_main(["--model", "0" * 32, "--images", "images", "--out", out, *args]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == before
    assert not (tmp_path / "runs").exists() and not (tmp_path / "o").exists()


def test_predict_names_outputs_so_two_inputs_with_one_stem_cannot_collide(tmp_path):
    from diffseg.studies.predict import output_stems

    files = [tmp_path / "x.png", tmp_path / "x.jpg", tmp_path / "y.png"]
    stems = output_stems(files)
    assert len(set(stems.values())) == 3 and stems[tmp_path / "y.png"] == "y"


def test_a_folder_dataset_with_two_files_of_one_stem_is_a_conflict(tmp_path, capsys):
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for name in ("x.png", "x.jpg"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / name)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "masks" / "x.png")
    assert data_main(["check", "--dataset", f"folder:{tmp_path}"]) == 2
    assert "same stem as x.jpg" in capsys.readouterr().err


def test_sixteen_bit_images_are_scaled_not_saturated(tmp_path):
    grey = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    rgb = read_image(tmp_path / "g16.png")
    assert rgb.dtype == np.uint8 and (rgb == 255).mean() < 0.01
    assert np.allclose(rgb[..., 0], np.round(grey / 257.0), atol=1)


def test_decompression_bombs_are_a_read_error(tmp_path, monkeypatch):
    from diffseg.data.io import ReadError

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 4096 pixels > 2 x the limit: PIL's bomb error
    with pytest.raises(ReadError, match="decompression bomb"):
        read_image(tmp_path / "big.png")


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "t.parquet") as tmp:
            pd.DataFrame({"a": [1]}).to_parquet(tmp)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "t.parquet").stat().st_mode) == 0o644


def test_report_on_truncated_exports_exits_2_without_a_traceback(tmp_path, capsys):
    from diffseg.folder import StudyFolder
    from diffseg.report.cli import main as report_main
    from diffseg.studies.schema import REQUIRED

    f = StudyFolder(tmp_path)
    for name in REQUIRED:
        path = f.export_table("s", name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"PAR1 truncated")
    f.export_meta("s").write_text("{")
    assert report_main(["--study", "s", "--runs", str(tmp_path), "--no-mlflow"]) == 2
    err = capsys.readouterr().err
    assert "not a readable Parquet file" in err and "Traceback" not in err


@pytest.mark.parametrize(("meta", "label_value", "message"), [
    ({"channel_names": None}, 1, "'channel_names' must be a mapping"),
    ({"labels": None}, 1, "'labels' must be a mapping"),
    ({"labels": {"background": 0, "lesion": 1.7}}, 1, "label values must be integers"),
    ({}, 7, "label values [7] are not declared in dataset.json"),
])
def test_nnunet_datasets_with_bad_metadata_or_undeclared_labels_are_refused(tmp_path, capsys, meta, label_value,
                                                                           message):
    import json

    from .test_data_bad_input import _nnunet

    root = tmp_path / "nn"
    _nnunet(root, {"background": 0, "lesion": 1})
    lab = np.zeros((20, 24), np.uint8)
    lab[:4] = label_value
    Image.fromarray(lab).save(root / "labelsTr" / "case000.png")
    d = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**d, **meta}))
    assert data_main(["check", "--dataset", f"nnunet:{root}"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


class _Planted:
    """Unpickling this runs code: it creates the file named in its argument."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_predict_never_unpickles_a_model_and_refuses_one_that_is_not_diffseg(tmp_path, capsys):
    """A planted ``python_model.pkl`` in a diffseg model is never opened (the model still predicts, from its
    MLmodel, config and tensor weights); a pyfunc model without the diffseg mark is refused before anything in it is
    deserialised; ``mlflow.pyfunc.load_model`` of a diffseg model keeps working for users."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from diffseg.experiments import train_trial
    from diffseg.folder import StudyFolder
    from diffseg.studies import tracking
    from diffseg.studies.logged_models import log_trial_model

    from .test_experiments import TINY

    folder = StudyFolder(tmp_path / "runs")
    uri = folder.store_uri
    exp_id, parent = tracking.setup_study(uri, "m", folder.root, None, params={}, tags={})
    run_id, _ = tracking.child_run(MlflowClient(uri), exp_id, parent, "t0", "t0", {})
    result = train_trial({**TINY, "train.steps": 4, "output_dir": str(tmp_path / "trial")})
    model_uri = log_trial_model(uri, run_id, result)
    mlflow.set_tracking_uri(uri)
    assert mlflow.pyfunc.load_model(model_uri).predict(np.zeros((1, 32, 32, 3), np.uint8)).shape == (1, 2, 32, 32)
    marker = tmp_path / "pwned"
    planted = list(folder.artifact_root.rglob("python_model.pkl"))
    assert planted, "the model's pickle is in the store"
    for pkl in planted:
        pkl.write_bytes(pickle.dumps(_Planted(str(marker))))
    _images(tmp_path / "images", ["a.png"])
    args = ["--images", str(tmp_path / "images"), "--tracking-uri", uri, "--steps", "2", "--ensemble", "2"]
    assert predict_main(["--model", model_uri, "--out", str(tmp_path / "o1"), *args]) == 0
    assert (tmp_path / "o1" / "a_mask.png").exists() and not marker.exists()
    assert predict_main(["--model", model_uri, "--out", str(tmp_path / "o3"), *args, "--steps", "10000"]) == 2
    assert "--steps 10000: the model's diffusion has T = 100 steps" in capsys.readouterr().err
    assert not (tmp_path / "o3").exists()

    class Other(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    with mlflow.start_run(run_id=run_id):
        other = mlflow.pyfunc.log_model(name="other", python_model=Other()).model_uri
    for pkl in folder.artifact_root.rglob("python_model.pkl"):
        pkl.write_bytes(pickle.dumps(_Planted(str(marker))))
    assert predict_main(["--model", other, "--out", str(tmp_path / "o2"), *args]) == 2
    assert "not a diffseg segmentation model" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "o2").exists()
    pickle.loads(planted[0].read_bytes())  # the planted pickle does run code when unpickled
    assert marker.exists()


def test_the_ray_state_seal_names_a_changed_added_or_unsealed_file(tmp_path, monkeypatch):
    from diffseg.studies.state_seal import SEAL_FILE, Sealer, key_path, problem

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # this test replaces the key

    d = tmp_path / "ray" / "study"
    (d / "t_00000").mkdir(parents=True)
    (d / "tuner.pkl").write_bytes(b"state")
    (d / "t_00000" / "params.pkl").write_bytes(b"params")
    (d / "diffseg_study.json").write_text("{}")  # diffseg's own files are read as JSON, not sealed
    assert "no diffseg seal" in problem(d)
    sealer = Sealer(d)
    sealer.seal()
    assert problem(d) is None and (key_path().stat().st_mode & 0o777) == 0o600
    (d / "diffseg_study.json").write_text('{"x": 1}')
    assert problem(d) is None
    (d / "t_00000" / "params.pkl").write_bytes(b"planted")
    assert "params.pkl" in problem(d) and "changed after it was sealed" in problem(d)
    sealer.seal()
    (d / "searcher-state-1.pkl").write_bytes(b"planted")
    assert "searcher-state-1.pkl" in problem(d) and "not written by this user" in problem(d)
    sealer.seal()
    assert problem(d) is None
    key_path().write_bytes(b"k" * 32)  # another user's key: every file is refused
    assert "changed after it was sealed" in problem(d)
    (d / SEAL_FILE).write_text("not json")
    assert "unreadable seal" in problem(d)


def test_the_seal_checks_the_top_level_each_iteration_and_the_trial_folders_after_trial_events(tmp_path, monkeypatch):
    """An iteration without a trial event lists the tune dir only (its cost does not grow with the trials); Ray's
    top-level saves, new trial folders and a removed seal are sealed at the next iteration, a trial's pickle
    rewritten in place (Ray's params.pkl when a trial restarts) after the trial event."""
    from diffseg.studies import state_seal
    from diffseg.studies.progress import SealState

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    d = tmp_path / "ray" / "study"
    (d / "t_00000").mkdir(parents=True)
    (d / "tuner.pkl").write_bytes(b"state")
    (d / "t_00000" / "params.pkl").write_bytes(b"params")
    reads = []
    monkeypatch.setattr(state_seal, "state_files", lambda tune_dir, real=state_seal.state_files: reads.append(1)
                        or real(tune_dir))
    cb = SealState(state_seal.Sealer(d))
    cb.on_step_end(iteration=0, trials=[])
    cb.on_step_end(iteration=1, trials=[])
    assert len(reads) == 1  # the second, idle iteration read no state file
    assert state_seal.problem(d) is None
    reads.clear()
    (d / "experiment_state-1.json").write_text("{}")
    cb.on_step_end(iteration=2, trials=[])
    (d / "tuner.pkl").write_bytes(b"state, saved again")
    cb.on_step_end(iteration=3, trials=[])
    (d / "t_00001").mkdir()
    (d / "t_00001" / "params.pkl").write_bytes(b"params")
    cb.on_step_end(iteration=4, trials=[])
    assert len(reads) == 3 and state_seal.problem(d) is None
    (d / "t_00000" / "params.pkl").write_bytes(b"params, trial restarted")
    cb.on_step_end(iteration=5, trials=[])
    assert "params.pkl" in state_seal.problem(d)  # no trial event yet: the trial folders were not read
    cb.on_trial_start(iteration=5, trials=[], trial=None)
    cb.on_step_end(iteration=6, trials=[])
    assert state_seal.problem(d) is None
    (d / state_seal.SEAL_FILE).unlink()
    cb.on_step_end(iteration=7, trials=[])
    assert state_seal.problem(d) is None


def test_state_that_ray_staged_is_sealed_before_its_background_copy_lands(tmp_path, monkeypatch):
    """Ray saves its experiment state into a staging folder and copies it into the tune dir on a background
    thread: a driver killed after the save but before the seal follows the copy leaves the staged bytes in the tune
    dir, which --resume accepts; other bytes stay refused, and a staging folder that moves is noticed by the
    per-iteration check."""
    from diffseg.studies.state_seal import Sealer, problem

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    d, staging = tmp_path / "ray" / "study", tmp_path / "staging"
    d.mkdir(parents=True)
    staging.mkdir()
    (d / "experiment_state-1.json").write_text("saved 1")
    (staging / "experiment_state-1.json").write_text("saved 2, staged")
    sealer = Sealer(d)
    sealer.seal(staging=staging)
    assert problem(d) is None
    (d / "experiment_state-1.json").write_text("saved 2, staged")  # the copy lands; the driver is killed
    assert problem(d) is None
    (d / "experiment_state-1.json").write_text("planted")
    assert "changed after it was sealed" in problem(d)
    (d / "experiment_state-1.json").write_text("saved 2, staged")
    sealer.seal_if_moved(d, staging)  # the copy's landing is sealed
    (staging / "experiment_state-1.json").write_text("saved 3, staged again")
    sealer.seal_if_moved(d, staging)  # nothing moved in the tune dir: the staging folder did
    (d / "experiment_state-1.json").write_text("saved 3, staged again")
    assert problem(d) is None
    # a sealer pickled into tuner.pkl by an earlier diffseg (a directory and a cache only) resumes sealing
    old = Sealer.__new__(Sealer)
    old.__dict__.update({"dir": d, "_seen": {}})
    old = pickle.loads(pickle.dumps(old))
    (d / "experiment_state-1.json").write_text("saved 4")
    old.seal_if_moved(d, staging)
    assert problem(d) is None


def test_predict_draws_any_ensemble_in_bounded_blocks_with_the_same_summary(monkeypatch):
    """``predict --ensemble 100000`` must not hold 100000 members: patches x members per sampler call stay within
    ``SAMPLES_PER_CALL``, and the running sums give the mean and std that all members at once would."""
    import torch

    from diffseg.experiments import build, modes
    from diffseg.experiments.config import TrialConfig
    from diffseg.experiments.predictor import Predictor
    from diffseg.masks import ensemble_summary

    from .test_experiments import TINY

    blocks = modes.sample_blocks(7, 600)
    covered = [(i, m) for a, b, s, e in blocks for i in range(a, b) for m in range(s, e)]
    assert max((b - a) * (e - s) for a, b, s, e in blocks) <= modes.SAMPLES_PER_CALL
    assert sorted(covered) == [(i, m) for i in range(7) for m in range(600)]
    monkeypatch.setattr(modes, "SAMPLES_PER_CALL", 3)
    cfg = TrialConfig.from_dict(TINY)
    pred = Predictor(cfg, build.model(cfg, 3).state_dict(), "cpu")
    drawn, real = [], pred.mode.predict

    def recording(*args):
        out = real(*args)
        drawn.append(out)
        return out

    monkeypatch.setattr(pred.mode, "predict", recording)
    r = pred.predict(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8), ensemble=7, steps=2)
    assert len(drawn) == 3 and max(d.shape[0] * d.shape[1] for d in drawn) <= 3
    mean, std, _ = ensemble_summary(torch.cat(drawn, dim=1).float(), dim=1, rule=pred.mode.probability)
    assert np.allclose(r.probability, mean[0, 0].numpy(), atol=1e-6)
    assert np.allclose(r.std, std[0, 0].numpy(), atol=1e-6)
    assert 0 < r.std.max() and r.members == 7


MEMORY_PROBE = """
import resource, sys
import numpy as np
from diffseg.experiments import build
from diffseg.experiments.config import TrialConfig
from diffseg.experiments.predictor import Predictor
from diffseg.studies.predict import save_maps
from tests.test_experiments import TINY
side = int(sys.argv[1])
cfg = TrialConfig.from_dict(TINY)
pred = Predictor(cfg, build.model(cfg, 3).state_dict(), "cpu")
image = np.zeros((side, side, 3), np.uint8)
pred.predict(image[:64, :64], 2, 2)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
r = pred.predict(image, 2, 2)
save_maps(__import__("pathlib").Path(sys.argv[2]), "x", r.probability, r.std, r.mask)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024 / side**2)
"""


def test_a_large_legal_image_is_predicted_within_the_stated_memory_bound(tmp_path):
    """The predictor's docstring states 10 bytes per pixel for its maps; with the resize and save temporaries a
    4000^2 image stays under 24 bytes per pixel above the image itself (it took 40 before the bound)."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, "4000", str(tmp_path)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    per_pixel = float(out.stdout.split()[-1])
    assert per_pixel < 24, f"{per_pixel:.1f} bytes per pixel above the image"
    assert Image.open(tmp_path / "x_prob.png").size == (4000, 4000)


def test_a_moved_or_corrupt_store_is_repointed_or_refused_and_a_dead_server_is_a_note(tmp_path, capsys,
                                                                                        monkeypatch):
    """predict on a study folder moved elsewhere finds its model through the folder's own store (re-pointed like
    export, report and resume do); a corrupt ``mlflow.db`` is exit 2 for predict and export and a note for the
    report; export to a missing folder creates nothing; the report does not wait for a server that is down."""
    import shutil
    import subprocess
    import sys
    import time
    from types import SimpleNamespace

    from mlflow.tracking import MlflowClient

    from diffseg.experiments import train_trial
    from diffseg.folder import StudyFolder
    from diffseg.report.cli import attach_to_mlflow
    from diffseg.studies import tracking
    from diffseg.studies.export_cli import main as export_main
    from diffseg.studies.local_server import free_port
    from diffseg.studies.logged_models import log_trial_model

    from .test_experiments import TINY

    folder = StudyFolder(tmp_path / "runs")
    exp_id, parent = tracking.setup_study(folder.store_uri, "m", folder.root, None, params={}, tags={})
    run_id, _ = tracking.child_run(MlflowClient(folder.store_uri), exp_id, parent, "t0", "t0", {})
    result = train_trial({**TINY, "train.steps": 2, "output_dir": str(tmp_path / "trial")})
    log_trial_model(folder.store_uri, run_id, result)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # set_tracking_uri in log_trial_model exports it
    moved = tmp_path / "elsewhere" / "runs"
    moved.parent.mkdir()
    shutil.move(folder.root, moved)  # the old absolute artifact paths are gone
    _images(tmp_path / "images", ["a.png"])
    args = ["--images", str(tmp_path / "images"), "--steps", "2", "--ensemble", "2"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # a new shell: the command alone
    p = subprocess.run([sys.executable, "-m", "diffseg.cli", "predict", "--model", run_id, "--runs", str(moved),
                        "--out", str(tmp_path / "o1"), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / "o1" / "a_mask.png").exists() and not (tmp_path / "mlflow.db").exists()

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "mlflow.db").write_bytes(b"SQLite format 3\x00" + b"garbage" * 100)
    assert predict_main(["--model", run_id, "--runs", str(corrupt), "--out", str(tmp_path / "o2"), *args]) == 2
    assert "mlflow.db: not a readable MLflow store" in capsys.readouterr().err and not (tmp_path / "o2").exists()
    assert export_main(["--study", "m", "--out", str(corrupt)]) == 2
    assert "not a readable MLflow store" in capsys.readouterr().err
    assert sorted(p.name for p in corrupt.iterdir()) == ["mlflow.db"]
    note = attach_to_mlflow(SimpleNamespace(meta={"parent_run_id": parent}, runs=corrupt, study="m"), tmp_path, None)
    assert "not a readable MLflow store" in note

    assert export_main(["--study", "m", "--out", str(tmp_path / "missing" / "x")]) == 2
    assert "no MLflow store" in capsys.readouterr().err and not (tmp_path / "missing").exists()

    t0 = time.monotonic()
    dead = f"http://127.0.0.1:{free_port()}"
    note = attach_to_mlflow(SimpleNamespace(meta={"parent_run_id": parent}, runs=moved, study="m"), tmp_path, dead)
    assert "does not answer" in note and time.monotonic() - t0 < 30
