"""The Parquet exports as their users read them: pandas, polars and DuckDB, across two different studies."""

import json
import math

import duckdb
import pandas as pd
import polars as pl
from mlflow.tracking import MlflowClient

from diffseg.experiments import TrialConfig, train_trial
from diffseg.experiments.flat import LONG, SCHEMA, flat_config, unflatten
from diffseg.folder import StudyFolder
from diffseg.studies import tracking
from diffseg.studies.dataset_tables import trial_config
from diffseg.studies.export import export_study
from diffseg.studies.schema import REQUIRED

from .test_experiments import TINY


def _study(out, uri, name, arms):
    """A study of real tiny trials logged the way a Ray trial logs them (without Ray), then exported."""
    exp_id, parent = tracking.setup_study(uri, name, out, None, params={"baseline": next(iter(arms))}, tags={})
    client = MlflowClient(uri)
    for i, (arm, overrides) in enumerate(arms.items()):
        cfg = TrialConfig.from_dict({**TINY, "train.steps": 4, "train.val_every": 2, **overrides,
                                     "output_dir": str(out / name / arm)})
        result = train_trial(cfg)
        run_id, _ = tracking.child_run(client, exp_id, parent, f"{name}_{i}", arm,
                                       {"arm": arm, "dataset": cfg.data.dataset, "seed": str(cfg.seed)})
        tracking.log_params(client, run_id, flat_config(cfg.to_dict())[0])
        tracking.log_trial_result(client, run_id, result)
        tracking.log_result_json(client, run_id, result)
        tracking.finish_run(client, run_id, ok=True)
    return export_study(uri, name, StudyFolder(out))


def test_two_studies_concatenate_in_pandas_polars_and_duckdb(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    curve = [1.0 + 0.01 * i for i in range(LONG + 8)]  # a fingerprint-like weighting, one value per t
    a = _study(tmp_path, uri, "study_a", {"uniform": {}, "min_snr": {"diffusion.weighting": "min_snr",
                                                                      "diffusion.weighting_params": {"gamma": 5}}})
    b = _study(tmp_path, uri, "study_b", {"curve": {"experiment": "e3", "diffusion.weighting": "curve",
                                                    "diffusion.weighting_params": {"values": curve},
                                                    "diffusion.input_scale": 0.5, "train.patience": 3}})
    ta, tb = pd.read_parquet(a["trials"]), pd.read_parquet(b["trials"])
    # the same column has the same type in both studies, even where one study has it all-null
    assert ta["cfg.diffusion.input_scale"].isna().all() and str(ta["cfg.diffusion.input_scale"].dtype) == "float64"
    assert str(ta["cfg.train.patience"].dtype) == str(tb["cfg.train.patience"].dtype) == "Int64"
    for col in set(ta.columns) & set(tb.columns):
        assert ta[col].dtype == tb[col].dtype, col
    assert {f"cfg.{k}" for k in SCHEMA} <= set(ta.columns) and "n_params" in ta and "params" not in ta
    # long curves live in their own table, not as long JSON strings in trials.parquet
    cc = pd.read_parquet(b["config_curves"])
    assert cc.key.unique().tolist() == ["diffusion.weighting_params.values"] and cc.value.tolist() == curve
    assert json.loads(tb["cfg.diffusion.weighting_params"].iloc[0]) == {"values": {"config_curves": len(curve)}}
    assert tb.select_dtypes("string").apply(lambda s: s.str.len().max()).max() < 400
    # the config is rebuilt exactly from the export (the report's trial_config)
    assert trial_config(tb.iloc[0], cc).diffusion.weighting_params == {"values": curve}

    for name in REQUIRED:
        frames = [pl.read_parquet(a[name]), pl.read_parquet(b[name])]
        both = pl.concat(frames, how="diagonal")  # strict: a type mismatch of a shared column raises
        assert both.height == sum(f.height for f in frames)
    trials = pl.concat([pl.read_parquet(a["trials"]), pl.read_parquet(b["trials"])], how="diagonal")
    for col in [c for c, t in SCHEMA.items() if t == "json"]:  # JSON columns decode (no 'NaN' literals)
        trials.get_column(f"cfg.{col}").str.json_decode(infer_schema_length=None)
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT study, dataset, arm, count(*) AS n, avg(best_val) AS v FROM read_parquet("
        f"['{a['trials']}', '{b['trials']}'], union_by_name = true) GROUP BY study, dataset, arm ORDER BY arm"
    ).fetchall()
    assert [(r[0], r[2], r[3]) for r in rows] == [("study_b", "curve", 1), ("study_a", "min_snr", 1),
                                                   ("study_a", "uniform", 1)]
    hist = con.execute(f"SELECT typeof(step), count(*) FROM read_parquet(['{a['history']}', '{b['history']}'], "
                       "union_by_name = true) GROUP BY 1").fetchall()
    assert hist == [("BIGINT", 6)]  # 2 validations x 3 trials, steps as integers


def test_flat_config_has_no_nan_literals_and_round_trips():
    cfg = TrialConfig.from_dict({**TINY, "diffusion.schedule": "sigmoid",
                                 "diffusion.schedule_params": {"start": -3.0, "end": 3.0, "tau": 1.0}})
    d = cfg.to_dict()
    d["diffusion"]["schedule_params"]["odd"] = math.nan
    flat, curves = flat_config(d)
    assert flat["diffusion.schedule_params"] == '{"end": 3.0, "odd": null, "start": -3.0, "tau": 1.0}'
    assert flat["model.channel_mult"] == "[1, 2]" and flat["diffusion.input_scale"] is None and not curves
    again = TrialConfig.from_dict(unflatten(flat_config(cfg.to_dict())[0]))
    assert again == cfg
