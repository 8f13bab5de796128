"""The paper's findings as numbers with seeds and 95 % intervals, computed from a study's exports (pure pandas).

Each function returns a table with one row per dataset (and task/architecture where it applies), the per-seed
statistic summarised as ``mean [low, high] (n=seeds)`` (``metrics.intervals``), and a plain verdict column that
states the rule it applies. Nothing here is tuned: the rules are fixed in the docstrings.

- (a) ``loss_shape``: training eps-loss over t, E2 (segmentation) vs E4 (image generation). Per trial: Spearman
  rho(t, loss) over the bins, the t of the minimum, and the rise after the minimum (max later / min). Rule:
  segmentation "dips then rises" when its minimum lies in 0 < t < 50 (not the first bin) and the loss later
  rises above 1.5x the minimum; generation "falls monotonically" when rho <= -0.9.
- (b) ``conditioning_gap``: E2 mask error (with the image) vs the matching E3 (mask only), normalised by the
  prior's error 4 pi (1 - pi). Per pair: mean (E3 - E2) over t < 400 and over t >= 400. Rule: "close below 400"
  when the upper 95 % bound of the t < 400 gap is below 0.1 (10 % of the prior's error).
- (c) ``fingerprint_agreement``: trained E3 curve per seed vs the training-free curve: t at 0.05 / 0.5 / 0.95,
  |differences| and the mean absolute difference of the normalised curves.
- (d) ``calibration``: E1 vs E2 test IoU and ECE (mean of per-image 10-bin ECE) per architecture and dataset,
  and the paired difference E2 - E1 over seeds. Rule: "E2 lowers ECE" when the upper bound of ECE(E2) - ECE(E1)
  is below 0.
- (e) ``arm_ranks``: each arm's rank per dataset by the mean validation metric over seeds (1 = best), with the
  test metrics (mean and 95 % interval over seeds) beside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sstats

from ..experiments import build
from ..experiments.result import BY_METRIC, MASK_ERROR, TRAIN_LOSS
from ..fingerprint import prior_error, trained_agreement
from ..metrics import fmt_ci, mean_ci

RISE, MONOTONE_RHO, SMALL_T, CLOSE_GAP, SPLIT_T = 1.5, -0.9, 50, 0.1, 400


def _curves(d, kind: str, experiments: tuple[str, ...]) -> pd.DataFrame:
    t = d.ok_trials()
    c = d.curves[d.curves.kind == kind].merge(
        t[["trial_id", "dataset", "experiment", "architecture", "seed"]], on="trial_id")
    return c[c.experiment.isin(experiments)]


def loss_shape(d) -> pd.DataFrame:
    rows = []
    for (ds, exp), grp in _curves(d, TRAIN_LOSS, ("e2", "e4")).groupby(["dataset", "experiment"]):
        per = []
        for _, tr in grp.groupby("trial_id"):
            tr = tr.sort_values("t")
            t, v = tr.t.to_numpy(), tr.value.to_numpy()
            i = int(np.argmin(v))
            per.append({"rho": float(sstats.spearmanr(t, v)[0]) if len(t) > 2 else np.nan, "t_min": float(t[i]),
                        "rise": float(v[i:].max() / v[i]) if v[i] > 0 else np.nan,
                        "dip": bool(0 < i and t[i] < SMALL_T and v[i:].max() >= RISE * v[i])})
        p = pd.DataFrame(per)
        task = "segmentation (E2)" if exp == "e2" else "image generation (E4)"
        verdict = (f"dip then rise in {int(p.dip.sum())}/{len(p)} seeds" if exp == "e2" else
                   f"monotone fall (rho <= {MONOTONE_RHO}) in {int((p.rho <= MONOTONE_RHO).sum())}/{len(p)} seeds")
        rows.append({"dataset": ds, "task": task, "spearman rho(t, loss)": fmt_ci(p.rho, 2),
                     "t of minimum": fmt_ci(p.t_min, 1), "max after min / min": fmt_ci(p.rise, 2),
                     "verdict": verdict})
    return pd.DataFrame(rows)


def conditioning_gap(d) -> pd.DataFrame:
    c = d.conditioning
    if c.empty:
        return pd.DataFrame()
    rows = []
    for (ds, arch, partner), grp in c.groupby(["dataset", "architecture", "partner"]):
        prior = d.prior(ds)
        norm = prior_error(prior) if prior else np.nan
        lo_gap, hi_gap = [], []
        for _, pair in grp.groupby(["e2_trial_id", "partner_trial_id"]):
            gap = (pair.without_image - pair.with_image) / norm
            lo_gap.append(float(gap[pair.t < SPLIT_T].mean()))
            hi_gap.append(float(gap[pair.t >= SPLIT_T].mean()))
        _, _, hi, n = mean_ci(lo_gap)
        close = "close below t = 400" if n > 1 and hi < CLOSE_GAP else (
            "not close below t = 400" if n > 1 else "one seed: no verdict")
        rows.append({"dataset": ds, "architecture": arch, "without image from": partner,
                     f"gap t < {SPLIT_T} (E3 - E2) / prior error": fmt_ci(lo_gap),
                     f"gap t >= {SPLIT_T}": fmt_ci(hi_gap), "verdict": close})
    return pd.DataFrame(rows)


def fingerprint_agreement(d) -> pd.DataFrame:
    rows = []
    e3 = _curves(d, MASK_ERROR, ("e3",))
    for ds, fp in sorted(d.fingerprints.items()):
        tf = fp["training_free"]
        per = []
        for _, tr in e3[e3.dataset == ds].groupby("trial_id"):
            tr = tr.sort_values("t")
            per.append(trained_agreement(tf["error"], tr.t.astype(int).tolist(), tr.value.tolist(), tf["prior_fg"]))

        def col(key, part, per=per):
            return [a[key][part] if a[key][part] is not None else np.nan for a in per]

        row = {"dataset": ds, "masks (train+val)": fp["split"]["samples"], "resolution (px)": fp["resolution"],
               "t_half training-free": tf["t_half"], "t_half trained E3": fmt_ci(col("t_half", "trained"), 0)}
        for key, name in (("t_half", "|Δ t_half|"), ("t_005", "|Δ t at 0.05|"), ("t_095", "|Δ t at 0.95|")):
            vals = col(key, "abs_diff")
            row[name] = fmt_ci(vals, 0) if np.isfinite(vals).any() else "not reached by t = T"
        row["mean |Δ curve|"] = fmt_ci([a["mean_abs_diff"] for a in per])
        rows.append(row)
    return pd.DataFrame(rows)


def calibration(d) -> pd.DataFrame:
    t = d.ok_trials()
    t = t[t.experiment.isin(["e1", "e2"])]
    if t.empty or "test_ece" not in t:
        return pd.DataFrame()
    rows = []
    for (ds, arch), grp in t.groupby(["dataset", "architecture"]):
        e = {x: grp[grp.experiment == x].set_index("seed") for x in ("e1", "e2")}
        row = {"dataset": ds, "architecture": arch}
        for x, name in (("e1", "E1"), ("e2", "E2")):
            row[f"IoU {name}"] = fmt_ci(e[x].test_iou)
            row[f"ECE {name}"] = fmt_ci(e[x].test_ece)
        seeds = sorted(set(e["e1"].index) & set(e["e2"].index))
        diff = [float(e["e2"].test_ece[s] - e["e1"].test_ece[s]) for s in seeds]
        row["ECE E2 - E1 (paired)"] = fmt_ci(diff)
        row["IoU E2 - E1 (paired)"] = fmt_ci([float(e["e2"].test_iou[s] - e["e1"].test_iou[s]) for s in seeds])
        _, lo, hi, n = mean_ci(diff)
        row["verdict"] = ("E2 lowers ECE" if n > 1 and hi < 0 else "E2 raises ECE" if n > 1 and lo > 0 else
                          "no clear difference" if n > 1 else "one seed: no verdict")
        if "cfg.eval.ensemble" in grp and len(e["e2"]):
            row["E2 members N"] = int(e["e2"]["cfg.eval.ensemble"].max())
        rows.append(row)
    return pd.DataFrame(rows)


def ece_vs_n(d) -> pd.DataFrame:
    """Long table (dataset, architecture, experiment, seed, N, ece, iou) from the ``test_ece_n{N}`` columns."""
    t = d.ok_trials()
    cols = [c for c in t.columns if c.startswith("test_ece_n")]
    if not cols:
        return pd.DataFrame()
    rows = []
    for r in t[t.experiment.isin(["e1", "e2"])].itertuples():
        for c in cols:
            n = int(c.removeprefix("test_ece_n"))
            v = getattr(r, c)
            if pd.notna(v):
                rows.append({"dataset": r.dataset, "architecture": r.architecture, "experiment": r.experiment,
                             "seed": r.seed, "N": n, "ece": float(v),
                             "iou": float(getattr(r, f"test_iou_n{n}", np.nan))})
    return pd.DataFrame(rows)


ARM_TEST_METRICS = (("test_iou", "test IoU"), ("test_ece", "test ECE"), ("test_x0_error", "test x0 error"))


def arm_ranks(d) -> pd.DataFrame:
    """Every arm on every dataset, ranked by its mean validation metric (the selection; never by test), with the
    test metrics as mean and 95 % interval over seeds, and the (seed, MLflow run id) pairs of its trials."""
    t = d.ok_trials().dropna(subset=["arm", "best_val"])
    rows = []
    for (ds, metric), grp in t.groupby(["dataset", "selection_metric"]):
        val = grp.groupby("arm").best_val.mean().sort_values(ascending=BY_METRIC[metric].ascending)
        for rank, (arm, v) in enumerate(val.items(), 1):
            own = grp[grp.arm == arm].sort_values("seed")
            row = {"dataset": ds, "arm": arm, "rank (validation)": f"{rank} of {len(val)}",
                   f"mean {metric}": round(v, 4), "seeds": len(own)}
            for col, name in ARM_TEST_METRICS:
                if col in own and own[col].notna().any():
                    row[name] = fmt_ci(own[col].dropna())
            row["runs"] = list(zip(own.seed.astype(int), own.run_id, strict=True))
            rows.append(row)
    return pd.DataFrame(rows)


def training_free_baseline(d) -> pd.DataFrame:
    """Blur + Otsu (``metrics.blur_otsu``) on exactly the test images the trials were evaluated on, beside the
    trials' test IoU per experiment and architecture: a learned model must beat it to show it learned anything."""
    from ..data import load_dataset, spread_subset
    from ..metrics import blur_otsu_iou
    from .data import trial_config

    t = d.ok_trials()
    t = t[t.experiment.isin(["e1", "e2"])]
    rows = []
    for ds, grp in t.groupby("dataset"):
        cfg = trial_config(grp.iloc[0], d.config_curves)
        data = load_dataset(ds, build.prep(cfg), cfg.data.data_root, d.runs / "cache")
        idx = data.splits(cfg.data.split_seed, cfg.data.val_fraction, cfg.data.test_fraction)["test"]
        idx = spread_subset(idx, data.case_ids, cfg.eval.test_max_images, cfg.data.split_seed)
        base = float(np.mean(blur_otsu_iou(data.images[idx], data.masks[idx])))
        for (arch, exp), trials in grp.groupby(["architecture", "experiment"]):
            _, lo, _, n = mean_ci(trials.test_iou)
            rows.append({"dataset": ds, "test images": len(idx), "blur + Otsu IoU": round(base, 3),
                         "model": f"{arch} {exp.upper()}", "model IoU": fmt_ci(trials.test_iou),
                         "beats the baseline": ("yes (lower 95 % bound above it)" if n > 1 and lo > base else
                                                "no" if n > 1 else "one seed: no verdict")})
    return pd.DataFrame(rows)


def fingerprint_order(agreement: pd.DataFrame) -> str:
    """The datasets ordered by t_half, training-free and trained (mean over seeds), as one sentence."""
    if agreement.empty:
        return ""

    def mean_of(text: str) -> float:
        try:
            return float(str(text).split()[0])
        except ValueError:
            return np.nan

    tf = agreement.sort_values("t_half training-free")
    line = "t_half order, training-free: " + " < ".join(
        f"{ds} ({t})" for ds, t in zip(tf.dataset, tf["t_half training-free"], strict=True))
    tr = agreement.assign(m=agreement["t_half trained E3"].map(mean_of)).dropna(subset=["m"]).sort_values("m")
    if not tr.empty:
        line += "; trained E3: " + " < ".join(f"{r.dataset} ({r.m:.0f})" for r in tr.itertuples())
    return line + "."
