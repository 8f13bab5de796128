"""The paper's findings as numbers with seeds and 95 % intervals, computed from a study's exports (pure pandas).

Each function returns a table with one row per dataset (and task/architecture where it applies), the per-seed
statistic summarised as ``mean [low, high] (n=seeds)`` (``metrics.intervals``), and a plain verdict column that
states the rule it applies. Nothing here is tuned: the rules are fixed in the docstrings.

- (a) ``loss_over_t`` (the verdict): the eps-loss over t measured post hoc on kept checkpoints
  (``analysis.loss_over_t``), dip rule of ``analysis.dip`` on its bootstrap interval. ``loss_shape`` reads the
  same rule's statistics off the running training-loss curve per seed (descriptive: intervals over seeds).
- (b) ``conditioning_gap``: E2 mask error (with the image) vs the matching E3 (mask only, same target). Per pair:
  the relative gap (E3 - E2) / E3 at the t where E3 > 0.05, its mean below the dataset's t_half, and the t where
  the curves part (the first t with a relative gap > 0.1) relative to t_half. Rule: "close below t_half" when the
  upper 95 % bound over seeds of the mean relative gap is below 0.1, "apart" when the lower bound is above it.
- (c) ``fingerprint_agreement``: trained E3 curve per seed vs the training-free curve of the same masks (the test
  masks E3 is evaluated on, each normalised by their own prior error): t at 0.05 / 0.5 / 0.95, |differences| and
  the mean absolute difference of the normalised curves; the train + val fingerprint's t_half beside it.
- (d) ``calibration``: E1 vs each E2 arm (target), vote-fraction ECE (mean of per-image 10-bin ECE), IoU and the
  members' diagnostics, and the paired difference E2 - E1 at the level of independent cases (``metrics.cases``:
  patches within a tile and seeds within a case are averaged first). Rule: "E2 lowers ECE" when the upper bound
  of the case-level interval of ECE(E2) - ECE(E1) is below 0, "raises" when the lower bound is above 0; no verdict
  when n cases cannot reach p < 0.05 (n < 6).
- (e) ``arm_ranks``: each arm's rank per dataset by the mean validation metric over seeds (1 = best), with the
  test metrics (mean and 95 % interval over seeds) beside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sstats

from ..analysis.dip import DIP, NO_DIP, RISE, UNDECIDED, dip_statistics
from ..experiments.kinds import FEED_FORWARD, GENERATION, MASK_ONLY, SEGMENTATION, SEGMENTING, title
from ..experiments.result import MASK_ERROR, TRAIN_LOSS
from ..experiments.selection import best_trials, rank_arms
from ..fingerprint import trained_agreement
from ..folder import StudyFolder
from ..metrics import fmt_ci, mean_ci, stronger
from ..metrics.cases import case_means, fmt_cases, paired_case_differences, summarise_cases
from ..studies.schema import read

MONOTONE_RHO, CLOSE_GAP, E3_FLOOR = -0.9, 0.1, 0.05


def _curves(d, kind: str, experiments: tuple[str, ...]) -> pd.DataFrame:
    t = d.ok_trials()
    c = d.curves[d.curves.kind == kind].merge(
        t[["trial_id", "dataset", "experiment", "architecture", "seed", "arm"]], on="trial_id")
    return c[c.experiment.isin(experiments)]


def loss_shape(d) -> pd.DataFrame:
    """The dip statistics (``analysis.dip``) of the running training-loss curve per seed, and Spearman rho; the
    rule over seeds (lower bounds of depth > 0 and rise >= 1.5: dip; upper bound of either below: no dip)."""
    rows = []
    for (ds, exp, arm), grp in _curves(d, TRAIN_LOSS, (SEGMENTATION, GENERATION)).groupby(
            ["dataset", "experiment", "arm"]):
        per = []
        for _, tr in grp.groupby("trial_id"):
            tr = tr.sort_values("t")
            t, v = tr.t.to_numpy(), tr.value.to_numpy()
            try:
                depth, rise = dip_statistics(np.round(t).astype(int), v)
            except ValueError:  # bins missing in a window
                depth, rise = np.nan, np.nan
            per.append({"rho": float(sstats.spearmanr(t, v)[0]) if len(t) > 2 else np.nan,
                        "depth": float(depth), "rise": float(rise)})
        p = pd.DataFrame(per)
        _, d_lo, d_hi, n = mean_ci(p.depth)
        _, r_lo, r_hi, _ = mean_ci(p.rise)
        verdict = ("one seed: no verdict" if n < 2 else DIP if d_lo > 0 and r_lo >= RISE else
                   NO_DIP if d_hi <= 0 or r_hi < RISE else UNDECIDED)
        task = title(exp)
        rows.append({"dataset": ds, "task": task, "arm": arm, "spearman rho(t, loss)": fmt_ci(p.rho, 2),
                     "dip depth L(0) - min[2, 50)": fmt_ci(p.depth, 4), "rise max[50, 250] / min": fmt_ci(p.rise, 2),
                     "verdict (running loss, over seeds)": verdict})
    return pd.DataFrame(rows)


def loss_over_t(runs, study: str = "long_training") -> pd.DataFrame:
    """The post-hoc dip verdict per trial and kept checkpoint (``analysis.loss_over_t`` exports), or empty."""
    folder = StudyFolder(runs)
    if not folder.export_table(study, "loss_over_t_verdicts").exists():
        return pd.DataFrame()
    v = read(folder.exports(study), "loss_over_t_verdicts").sort_values(["experiment", "step"])
    task = v.experiment.map(title)
    return pd.DataFrame({
        "dataset": v.dataset, "task": task, "checkpoint step": v.step, "n": v.images.astype(str) + " images x "
        + v.draws.astype(str) + " draws",
        "dip depth L(0) - min[2, 50)": [f"{a:.4f} [{b:.4f}, {c:.4f}]" for a, b, c in
                                        zip(v.dip_depth, v.dip_depth_low, v.dip_depth_high, strict=True)],
        "rise max[50, 250] / min": [f"{a:.2f} [{b:.2f}, {c:.2f}]" for a, b, c in
                                    zip(v.rise, v.rise_low, v.rise_high, strict=True)],
        "verdict": v.verdict})


def loss_over_t_chart(runs, study: str = "long_training"):
    """The post-hoc eps-loss over t per kept checkpoint (log axes) with the optimal mask denoiser's SNR x MMSE
    (dashed), one panel per task; None without ``loss_over_t.parquet``."""
    import altair as alt

    folder = StudyFolder(runs)
    if not folder.export_table(study, "loss_over_t").exists():
        return None
    c = read(folder.exports(study), "loss_over_t")
    c = c.assign(task=c.experiment.map(title), **{"t + 1": c.t + 1, "checkpoint": c.step.astype(str)})
    opt = c[c.optimal.notna() & (c.step == c.step.max())].assign(curve="optimal mask denoiser (SNR x MMSE)")
    x = alt.X("t + 1:Q", title="diffusion step t + 1 (log scale)", scale=alt.Scale(type="log"))
    y = alt.Y("loss:Q", title="eps-space MSE (fixed batch and noise)", scale=alt.Scale(type="log"))
    lines = alt.Chart(c).mark_line(point=True).encode(
        x=x, y=y, color=alt.Color("checkpoint:N", sort=sorted(c.checkpoint.unique(), key=int), title="step"))
    ref = alt.Chart(opt[opt.optimal > 1e-6]).mark_line(strokeDash=[4, 4], color="black").encode(
        x=x, y=alt.Y("optimal:Q", scale=alt.Scale(type="log")))
    return alt.hconcat(*[
        alt.layer(lines.transform_filter(alt.datum.task == task), ref.transform_filter(alt.datum.task == task))
        .properties(width=300, height=220, title=task) for task in sorted(c.task.unique())])


def t_half(d, dataset: str) -> float | None:
    """The dataset's t_half: where its training-free mask error (train + val masks) reaches 0.5 of the prior's."""
    fp = d.fingerprints.get(dataset)
    return fp["training_free"]["t_half"] if fp else None


def conditioning_gap(d) -> pd.DataFrame:
    c = d.conditioning
    if c.empty:
        return pd.DataFrame()
    rows = []
    for (ds, arch, partner), grp in c.groupby(["dataset", "architecture", "partner"]):
        th = t_half(d, ds)
        below, part, n_t = [], [], []
        for _, pair in grp.groupby(["e2_trial_id", "partner_trial_id"]):
            pair = pair.sort_values("t")
            rel = (pair.without_image - pair.with_image) / pair.without_image
            ok = pair.without_image > E3_FLOOR
            sel = ok & (pair.t < th) if th is not None else ok & False
            n_t.append(int(sel.sum()))
            below.append(float(rel[sel].mean()) if sel.any() else np.nan)
            apart = pair.t[ok & (rel > CLOSE_GAP)]
            part.append(float(apart.iloc[0]) / th if len(apart) and th else np.nan)
        _, lo, hi, n = mean_ci(below)
        verdict = ("no t below t_half with E3 error > 0.05: not testable" if n == 0 else
                   "one seed: no verdict" if n < 2 else f"close below t_half (gap < {CLOSE_GAP})" if hi < CLOSE_GAP
                   else f"apart below t_half (gap > {CLOSE_GAP})" if lo > CLOSE_GAP else "undecided")
        rows.append({"dataset": ds, "architecture": arch, "without image from": partner,
                     "t_half": th, "t used (E3 > 0.05, t < t_half)": int(np.median(n_t)) if n_t else 0,
                     "relative gap (E3 - E2) / E3 below t_half": fmt_ci(below),
                     "t where they part / t_half": fmt_ci(part, 2), "verdict": verdict})
    return pd.DataFrame(rows)


def fingerprint_agreement(d) -> pd.DataFrame:
    rows = []
    e3 = _curves(d, MASK_ERROR, (MASK_ONLY,))
    for ds, fp in sorted(d.fingerprints.items()):
        per = []
        test = d.test_fingerprints.get(ds)  # of the test masks E3's curve was measured on (evaluation only)
        same_tf = test["training_free"] if test else None
        for _, tr in e3[e3.dataset == ds].groupby("trial_id") if test else ():
            tr = tr.sort_values("t")
            per.append(trained_agreement(same_tf["error"], tr.t.astype(int).tolist(), tr.value.tolist(),
                                         same_tf["prior_fg"]))

        def col(key, part, per=per):
            return [a[key][part] if a[key][part] is not None else np.nan for a in per]

        tf = fp["training_free"]
        row = {"dataset": ds, "masks (train+val)": fp["split"]["samples"], "resolution (px)": fp["resolution"],
               "t_half training-free (train+val)": tf["t_half"]}
        if per:
            row.update({"test masks": f"{test['masks']} (prior {same_tf['prior_fg']:.3f} vs {tf['prior_fg']:.3f})",
                        "t_half training-free (test masks)": same_tf["t_half"],
                        "t_half trained E3 (test masks)": fmt_ci(col("t_half", "trained"), 0)})
            for key, name in (("t_half", "|Δ t_half|"), ("t_005", "|Δ t at 0.05|"), ("t_095", "|Δ t at 0.95|")):
                vals = col(key, "abs_diff")
                row[name] = fmt_ci(vals, 0) if np.isfinite(vals).any() else "not reached by t = T"
            row["mean |Δ curve|"] = fmt_ci([a["mean_abs_diff"] for a in per])
        rows.append(row)
    return pd.DataFrame(rows)


def calibration(d) -> pd.DataFrame:
    """E1 against each E2 arm per dataset, from the per-image exports, at the level of independent cases."""
    t = d.ok_trials()
    t = t[t.experiment.isin(SEGMENTING)]
    if t.empty or "test_ece" not in t or d.images.empty:
        return pd.DataFrame()
    img = d.images[d.images.trial_id.isin(t.trial_id)].merge(
        t[["trial_id", "experiment", "architecture", "cfg.diffusion.target"]], on="trial_id")
    rows = []
    for (ds, arch), grp in img.groupby(["dataset", "architecture"]):
        e1 = grp[grp.experiment == FEED_FORWARD]
        for arm, e2 in grp[grp.experiment == SEGMENTATION].groupby("arm"):
            row = {"dataset": ds, "architecture": arch, "E2 arm": arm,
                   "target": e2["cfg.diffusion.target"].iloc[0], "seeds": e2.seed.nunique()}
            for name, rows_ in (("E1", e1), ("E2", e2)):
                for metric, label in (("iou", "IoU"), ("ece", "ECE")):
                    row[f"{label} {name}"] = fmt_cases(summarise_cases(case_means(rows_, metric))) if len(
                        rows_) else "-"
            for metric, label in (("ece_softmean", "ECE E2 grey-level mean"), ("member_error", "E2 member error"),
                                  ("disagreement", "E2 disagreement"), ("binariness", "E2 binariness"),
                                  ("bg_prob", "E2 p on background")):
                if metric in e2 and e2[metric].notna().any():
                    row[label] = round(float(case_means(e2, metric).mean()), 3)
            if "member_error" in e2:
                row["ECE <= member error (images)"] = f"{float((e2.ece <= e2.member_error + 1e-6).mean()):.0%}"
            if len(e1):
                diff = summarise_cases(paired_case_differences(e2, e1, "ece"))
                row["ECE E2 - E1 (cases)"] = fmt_cases(diff)
                row["IoU E2 - E1 (cases)"] = fmt_cases(summarise_cases(paired_case_differences(e2, e1, "iou")))
                row.update({"n cases": diff["n_cases"], "p (Wilcoxon)": f"{diff['p']:.2g}",
                            "smallest p at n": f"{diff['p_min']:.2g}", "detectable ECE effect": round(diff["mde"], 4)})
                row["verdict"] = (f"too few cases to decide (n={diff['n_cases']}: p >= {diff['p_min']:.2g})"
                                  if not diff["p_min"] < 0.05 else "E2 lowers ECE" if diff["high"] < 0 else
                                  "E2 raises ECE" if diff["low"] > 0 else "no clear difference")
            ens = t[(t.dataset == ds) & (t.arm == arm)]
            if "cfg.eval.ensemble" in ens and len(ens):
                row["E2 members N"] = int(ens["cfg.eval.ensemble"].max())
            rows.append(row)
    return pd.DataFrame(rows)


def ece_vs_n(d) -> pd.DataFrame:
    """Long table (dataset, architecture, experiment, seed, N, ece, iou) from the ``test_ece_n{N}`` columns."""
    t = d.ok_trials()
    cols = [c for c in t.columns if c.startswith("test_ece_n")]  # test_ece_softmean_n* do not match
    if not cols:
        return pd.DataFrame()
    rows = []
    for r in t[t.experiment.isin(SEGMENTING)].itertuples():
        for c in cols:
            n = int(c.removeprefix("test_ece_n"))
            v = getattr(r, c)
            if pd.notna(v):
                rows.append({"dataset": r.dataset, "architecture": r.architecture, "experiment": r.experiment,
                             "arm": r.arm, "seed": r.seed, "N": n, "ece": float(v),
                             "ece_softmean": float(getattr(r, f"test_ece_softmean_n{n}", np.nan)),
                             "iou": float(getattr(r, f"test_iou_n{n}", np.nan))})
    return pd.DataFrame(rows)


ARM_TEST_METRICS = (("test_iou", "test IoU"), ("test_ece", "test ECE"), ("test_x0_error", "test x0 error"))


def arm_ranks(d) -> pd.DataFrame:
    """Every arm on every dataset, ranked by ``selection.RANK_RULE`` (validation, never test), with the test metrics
    as mean and 95 % interval over seeds, the (seed, MLflow run id) pairs of its trials, and which arm holds the
    best single trial (``selection.BEST_RULE``: the one the registry registers)."""
    t = d.ok_trials().dropna(subset=["arm", "best_val"])
    best = best_trials(t).set_index("dataset")
    rows = []
    for r in rank_arms(t).itertuples():
        own = t[(t.dataset == r.dataset) & (t.arm == r.arm) & (t.selection_metric == r.selection_metric)]
        own = own.sort_values("seed")
        row = {"dataset": r.dataset, "arm": r.arm, "rank (mean validation)": f"{r.rank} of {r.of}",
               f"mean {r.selection_metric}": round(r.mean_val, 4), "seeds": r.seeds,
               "holds the best trial (registered)": bool(r.dataset in best.index and best.loc[r.dataset, "arm"] == r.arm
                                                         and best.loc[r.dataset, "selection_metric"]
                                                         == r.selection_metric)}
        for col, name in ARM_TEST_METRICS:
            if col in own and own[col].notna().any():
                row[name] = fmt_ci(own[col].dropna())
        row["runs"] = list(zip(own.seed.astype(int), own.run_id, strict=True))
        rows.append(row)
    return pd.DataFrame(rows)


def training_free_baseline(d) -> pd.DataFrame:
    """Per dataset the stronger training-free baseline (``metrics.TRAINING_FREE``: blur + Otsu, all foreground;
    exported by the study on exactly the test images the trials were evaluated on) beside the trials' test IoU per
    experiment and architecture: a learned model must beat it to show it learned anything."""
    t = d.ok_trials()
    t = t[t.experiment.isin(SEGMENTING)]
    rows = []
    for _, bases in d.baselines.groupby("dataset") if len(d.baselines) else []:
        b = bases.set_index("method", drop=False).loc[stronger(dict(zip(bases.method, bases.iou, strict=True)))]
        for (arch, exp, arm), trials in t[t.dataset == b.dataset].groupby(["architecture", "experiment", "arm"]):
            _, lo, _, n = mean_ci(trials.test_iou)
            rows.append({"dataset": b.dataset, "test images": b.test_images, "baseline": b.method,
                         "baseline IoU": round(b.iou, 3),
                         "model": f"{arch} {exp.upper()} ({arm})", "model IoU": fmt_ci(trials.test_iou),
                         "beats the baseline": ("yes (lower 95 % bound above it)" if n > 1 and lo > b.iou else
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

    tf = agreement.sort_values("t_half training-free (train+val)")
    line = "t_half order, training-free: " + " < ".join(
        f"{ds} ({t})" for ds, t in zip(tf.dataset, tf["t_half training-free (train+val)"], strict=True))
    if "t_half trained E3 (test masks)" not in agreement:
        return line + "."
    tr = agreement.assign(m=agreement["t_half trained E3 (test masks)"].map(mean_of)).dropna(subset=["m"])
    tr = tr.sort_values("m")
    if not tr.empty:
        line += "; trained E3: " + " < ".join(f"{r.dataset} ({r.m:.0f})" for r in tr.itertuples())
    return line + "."
