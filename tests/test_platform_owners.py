"""The platform's own concepts each have one owner: the study folder (paths and the tracking-store rule), the
export schema (held to the README's table), the command line's axes and the one console entry point."""

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from diffseg.cli import COMMANDS
from diffseg.cli import main as diffseg_main
from diffseg.folder import StudyFolder, choose_tracking_uri, is_server
from diffseg.studies import cli
from diffseg.studies.schema import REQUIRED, TABLES, SchemaError, conform, problems, read

ROOT = Path(__file__).resolve().parents[1]
DTYPE_WORDS = {"string": "string", "Int64": "Int64", "int64": "int64", "float64": "float64", "bool": "bool",
               "timestamp": "timestamp", "boolean": "bool"}


def test_tracking_uri_precedence(tmp_path, monkeypatch):
    f = StudyFolder(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert choose_tracking_uri("http://given:1", "http://recorded:2", f) == "http://given:1"
    assert choose_tracking_uri(None, "http://recorded:2", f) == "http://recorded:2"
    assert choose_tracking_uri(None, None, f) == f.store_uri and f.owns(f.store_uri)
    assert choose_tracking_uri(None, None, None) == "http://env:5000"  # a command without a folder
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(ValueError, match="no MLflow tracking store"):
        choose_tracking_uri(None, None, None)
    assert is_server("https://x") and is_server("http://x") and not is_server(f.store_uri) and not is_server(None)


def test_a_moved_folder_keeps_its_paths_relative(tmp_path):
    a, b = StudyFolder(tmp_path / "a"), StudyFolder(tmp_path / "b")
    for name in ("lock", "ray", "cache", "fingerprints", "store_db", "artifact_root"):
        assert getattr(a, name).relative_to(a.root) == getattr(b, name).relative_to(b.root)
    assert a.export_table("s", "trials").relative_to(a.root) == Path("exports/s/trials.parquet")
    assert a.state("s").parent == a.plan("s").parent == a.tune_dir("s")
    with pytest.raises(ValueError, match="unknown export table 'trial'; did you mean 'trials'"):
        a.export_table("s", "trial")


def _readme_schema() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Exported schema", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `([a-z_]+)\.parquet` \| (.*) \|$", section, re.M)}


def test_readme_schema_table_is_the_export_schema():
    readme = _readme_schema()
    assert set(readme) == set(TABLES), "README tables vs studies/schema.py"
    for name, cell in readme.items():
        t = TABLES[name]
        named = set(re.findall(r"`([A-Za-z_][\w.{}]*)`", cell)) | {
            w.strip() for group in re.findall(r"`([^`]+)`", cell) for w in group.split(",")}
        fixed = [c for c in t.columns if not c.startswith("cfg.")]
        assert not [c for c in fixed if c not in named], f"{name}: columns missing from the README"
        # every "`a, b` (type" group of the README states the schema's type of each column it names
        for group, word in re.findall(r"`([^`]+)` \(([A-Za-z0-9]+)", cell):
            if word not in DTYPE_WORDS:
                continue
            for col in (c.strip() for c in group.split(",")):
                if col in t.columns:
                    assert DTYPE_WORDS[t.columns[col]] == DTYPE_WORDS[word], (name, col, word)


def test_conform_and_read_refuse_what_the_schema_does_not_hold(tmp_path):
    df = conform("reliability", pd.DataFrame([{"trial_id": 1, "bin": 0, "count": 3, "confidence": 0.5}]))
    assert list(df.columns) == list(TABLES["reliability"].columns) and str(df.trial_id.dtype) == "string"
    assert problems("reliability", df) == []
    with pytest.raises(SchemaError, match="not in the export schema"):
        conform("reliability", pd.DataFrame([{"trial_id": "a", "surprise": 1.0}]))
    bad = df.astype({"bin": "float64"}).drop(columns=["upper"])
    bad.to_parquet(tmp_path / "reliability.parquet")
    with pytest.raises(SchemaError, match=r"reliability.parquet.*missing column 'upper'.*'bin' is float64"):
        read(tmp_path, "reliability")
    # study-dependent columns match their pattern: trials' test metrics sit before the config columns
    t = conform("trials", pd.DataFrame([{"trial_id": "x", "test_iou": 0.5, "cfg.seed": 1}]))
    assert list(t.columns).index("test_iou") < list(t.columns).index("cfg.seed") and t.test_iou.dtype == "float64"
    assert set(REQUIRED) == set(TABLES) - {"loss_over_t", "loss_over_t_verdicts"}


@pytest.mark.parametrize("key", ["seed", "data.dataset"])
def test_set_cannot_override_the_plan_axes(key, tmp_path, capsys):
    rc = cli.main(["--study", "weighting_schedules", "--dry-run", "--seed", "0", "--set", f"{key}=7",
                   "--out", str(tmp_path / "o")])
    assert rc == 2 and f"--set {key}: set by the study's plan" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_one_entry_point_lists_and_runs_every_command(capsys):
    assert diffseg_main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {name} " in listed for name in COMMANDS)
    assert diffseg_main(["stduy"]) == 2 and "did you mean 'study'" in capsys.readouterr().err
    assert diffseg_main(["study", "--list"]) == 0 and "weighting_schedules" in capsys.readouterr().out
    for name in COMMANDS:  # every command answers --help (argparse exits 0)
        with pytest.raises(SystemExit) as exc:
            diffseg_main([name, "--help"])
        assert exc.value.code == 0, name
        capsys.readouterr()


def test_the_console_script_is_installed():
    exe = Path(sys.executable).with_name("diffseg")
    assert exe.exists(), "pip install -e . installs the diffseg console script"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "study" in r.stdout and "predict" in r.stdout
