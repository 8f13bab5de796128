"""Report sections. Each returns a ``Section`` (title, text, HTML tables, Altair charts, images) or None when
the study has no data for it."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

import altair as alt
import numpy as np
import pandas as pd

from ..experiments.kinds import FEED_FORWARD, MASK_ONLY, SEGMENTATION, SEGMENTING
from ..experiments.kinds import title as kind_title
from ..experiments.result import MASK_ERROR, TRAIN_LOSS, status_summary
from ..experiments.selection import BEST_RULE, RANK_RULE
from ..fingerprint import prior_error
from . import findings
from .data import StudyData

# columns of comparisons.parquet the report shows (exports written before n_cases/ci_method/p_min/mde lack them)
PAIRED_SHOWN = ("dataset", "metric", "arm", "baseline", "n_images", "n_cases", "n_seeds", "diff", "95% CI",
                "ci_method", "p_holm", "p_min", "mde", "better")

W, H = 260, 180
GALLERY_CAP = 12  # uncertainty galleries shown at most (one per dataset and arm; the caption says when capped)


@dataclass
class Section:
    key: str
    title: str
    text: str = ""
    tables: list[str] = field(default_factory=list)
    charts: list[tuple[str, alt.TopLevelMixin]] = field(default_factory=list)  # (name, chart)
    images: list[tuple[str, str]] = field(default_factory=list)  # (caption, data URI)


def _fmt(mean: float, std: float, n: int) -> str:
    if pd.isna(mean):
        return "-"
    return f"{mean:.3f}" if n <= 1 or pd.isna(std) else f"{mean:.3f} ± {std:.3f} (n={n})"


def _table(df: pd.DataFrame, links: dict[str, str] | None = None) -> str:
    """An escaped HTML table; a ``runs`` column of (seed, run id) pairs becomes "s<seed>" per trial, linked where
    ``links`` (run id -> URL) has the run (the only HTML not escaped: built here from escaped parts)."""
    df = df.copy()
    anchors = {}
    if "runs" in df:
        def cell(pairs):
            parts = []
            for seed, run_id in pairs:
                token = f"@@run{len(anchors)}@@"
                url = (links or {}).get(run_id)
                anchors[token] = (f'<a href="{html.escape(url)}">s{seed}</a>' if url else f"s{seed}")
                parts.append(token)
            return " ".join(parts)
        df["runs"] = df["runs"].map(cell)
    out = df.to_html(index=False, border=0, classes="tbl", escape=True, na_rep="-")
    for token, anchor in anchors.items():
        out = out.replace(token, anchor)
    return out


def summary(d: StudyData) -> Section:
    t, m = d.trials, d.meta
    rows = [("study", d.study), ("description", m.get("description", "")), ("budget", m.get("budget")),
            ("hardware", m.get("hardware")), ("git commit", m.get("git_commit")),
            ("trials", status_summary(t.status)),
            ("total compute", f"{t.wall_time_s.fillna(0).sum() / 60:.1f} min")]
    rows += [(f"dataset {name}", f"hash {h[:16]}") for name, h in sorted(m.get("datasets", {}).items())]
    return Section("summary", "Summary", tables=[_table(pd.DataFrame(rows, columns=["", "value"]))])


ARCH_LABEL = {"ensemdiff": "EnsemDiff", "segdiff": "SegDiff", "medsegdiff": "MedSegDiff",
              "nnunet": "PlainConvUNet (nnU-Net architecture, shared recipe; not the nnU-Net pipeline)"}
ARCH_ORDER = {"ensemdiff": 0, "segdiff": 1, "medsegdiff": 2, "nnunet": 3, "segformer": 4}


def _arch_label(t: pd.DataFrame, arch: str) -> str:
    if arch == "segformer":
        col = "cfg.model.segformer_variant"
        variants = sorted(t.loc[t.architecture == arch, col].dropna().unique()) if col in t else []
        return "SegFormer-" + "/".join(str(v).upper() for v in variants) if variants else "SegFormer"
    return ARCH_LABEL.get(arch, arch)


def table1(d: StudyData) -> Section | None:
    t = d.ok_trials()
    if "test_iou" not in t or t.experiment.isin(SEGMENTING).sum() == 0 or t.architecture.nunique() < 2:
        return None
    g = t[t.experiment.isin(SEGMENTING)].groupby(["dataset", "architecture", "experiment"])
    agg = g.agg(iou=("test_iou", "mean"), iou_sd=("test_iou", "std"), ece=("test_ece", "mean"),
                ece_sd=("test_ece", "std"), n=("test_iou", "size")).reset_index()
    rows = []
    for (ds, arch), grp in agg.groupby(["dataset", "architecture"]):
        e = {r.experiment: r for r in grp.itertuples()}
        row = {"dataset": ds, "architecture": _arch_label(t, arch), "_order": ARCH_ORDER.get(arch, 9)}
        for exp, name in ((FEED_FORWARD, "feed-forward"), (SEGMENTATION, "diffusion")):
            r = e.get(exp)
            row[f"IoU {name}"] = _fmt(r.iou, r.iou_sd, r.n) if r else "-"
            row[f"ECE {name}"] = _fmt(r.ece, r.ece_sd, r.n) if r else "-"
        both = FEED_FORWARD in e and SEGMENTATION in e
        ff, diff = (e.get(FEED_FORWARD), e.get(SEGMENTATION))
        row["ΔIoU (diff - ff)"] = f"{diff.iou - ff.iou:+.3f}" if both else "-"
        row["ΔECE (diff - ff)"] = f"{diff.ece - ff.ece:+.3f}" if both else "-"
        rows.append(row)
    df = pd.DataFrame(rows).sort_values(["dataset", "_order"]).drop(columns="_order")
    return Section("table1", "Table 1: feed-forward vs diffusion training",
                   "Test IoU and ECE per dataset and architecture, mean ± std over seeds. ECE is the mean over test "
                   "images of each image's 10-bin equal-width ECE of the foreground probability (the pooled-pixel "
                   "ECE is exported as test_ece_pooled). The three diffusion architectures share one training "
                   "recipe (this platform's, not each paper's own); the references are trained feed-forward only.",
                   tables=[_table(df)])


def _normalised_e3(d: StudyData) -> pd.DataFrame:
    t = d.ok_trials()
    c = d.curves.merge(t[["trial_id", "dataset", "architecture", "experiment"]], on="trial_id")
    c = c[(c.experiment == MASK_ONLY) & (c.kind == MASK_ERROR)].copy()
    prior = {ds: fp["training_free"]["prior_fg"] for ds, fp in d.fingerprints.items()}
    c["prior"] = pd.to_numeric(c.dataset.astype(object).map(prior), errors="coerce").astype(float)
    c = c.dropna(subset=["prior"])
    c["value"] = c.value / prior_error(c.prior)
    return c


def _at(t, resolution: int) -> str:
    """A t with the resolution it holds at (a fingerprint's t moves with the image size)."""
    return "not reached by t = T" if t is None or pd.isna(t) else f"{int(t)} at {resolution} px"


def fingerprints(d: StudyData) -> Section | None:
    e3 = _normalised_e3(d)
    if not d.fingerprints:
        return None
    tf = pd.concat([pd.DataFrame({"dataset": ds, "t": fp["training_free"]["t"],
                                  "value": fp["training_free"]["error"], "curve": "training-free"})
                    for ds, fp in d.fingerprints.items()])
    archs = sorted(e3.architecture.dropna().unique()) if not e3.empty else []
    archs = archs if len(archs) > 1 else []  # one architecture: its curve is the mean
    palette = ["#4c78a8", "#72b7b2", "#f58518", "#54a24b", "#b279a2"]
    trained = [] if e3.empty else ["trained E3, mean of architectures" if archs else "trained E3"]
    colour = alt.Color("curve:N", title=None, scale=alt.Scale(  # the legend names only the curves drawn
        domain=[*archs, *trained, "training-free"],
        range=[*(palette[i % len(palette)] for i in range(len(archs))), *(["#e45756"] if trained else []), "black"]))
    y = alt.Y("value:Q", title="mask error / prior error 4π(1-π)", scale=alt.Scale(domain=[0, 3], clamp=True))
    layers = []
    if not e3.empty:
        per_arch = e3.groupby(["dataset", "architecture", "t"], as_index=False).value.mean()
        per_arch["curve"] = per_arch.architecture
        mean = per_arch.groupby(["dataset", "t"], as_index=False).value.mean()
        mean["curve"] = trained[0]
        if archs:
            layers.append(alt.Chart(per_arch).mark_line(strokeDash=[3, 3]).encode(
                x=alt.X("t:Q", title="diffusion step t"), y=y, color=colour))
        layers.append(alt.Chart(mean).mark_line(strokeWidth=3).encode(
            x=alt.X("t:Q", title="diffusion step t"), y=y, color=colour))
    layers.append(alt.Chart(tf).mark_line().encode(x=alt.X("t:Q", title="diffusion step t"), y=y, color=colour))
    charts = []
    for ds, fp in sorted(d.fingerprints.items()):
        sub = [layer.transform_filter(alt.datum.dataset == ds) for layer in layers]
        charts.append((f"fingerprint_{ds}", alt.layer(*sub).properties(
            width=W, height=H, title=f"{ds} at {fp['resolution']} px")))
    w = pd.concat([pd.DataFrame({"dataset": ds, "t": fp["training_free"]["t"],
                                 "weight": fp["derived"]["weighting"]}) for ds, fp in d.fingerprints.items()])
    charts.append(("derived_weighting", alt.Chart(w).mark_line().encode(
        x=alt.X("t:Q", title="diffusion step t"), y=alt.Y("weight:Q", title="derived weighting (mean 1)"),
        color="dataset:N").properties(width=W * 2, height=H, title="fingerprint-derived weighting |d error / dt|")))
    rows = [{"dataset": ds, "resolution (px)": fp["resolution"], "masks used": f"{fp['split']['samples']} "
             f"({fp['split']['used']})", "t_half": _at(fp["training_free"]["t_half"], fp["resolution"]),
             "recoverable until t": fp["derived"]["recoverable_until_t"],
             "no better than prior from t": fp["derived"]["lost_from_t"] or "not reached by T",
             "error at T": round(fp["derived"]["error_at_T"], 3),
             "recommended logSNR(T)": round(fp["derived"]["recommended_logsnr_end"], 2),
             "sparse": fp["mask_stats"]["sparse"]} for ds, fp in sorted(d.fingerprints.items())]
    tables = [_table(pd.DataFrame(rows))]
    agree = findings.fingerprint_agreement(d)
    text = ("The training-free curve (black: expected error of the best label estimate from a pooled noisy "
            "observation, train + val masks, normalised by the prior's error) per dataset at the resolution, "
            "schedule and T of the study's trials.")
    if not e3.empty:
        tables.append(_table(agree))
        text += (" Trained E3 mask-prediction error, normalised the same way: mean over architectures (red)"
                 + (", each architecture dotted" if archs else "") + ". The agreement table gives the t "
                 "where each curve crosses 0.05 / 0.5 / 0.95 and their mean absolute difference, mean and 95 % "
                 "interval over seeds. The axis stops at 3: an eps-target model's x0 estimate (x_t - s eps) / a "
                 "amplifies its eps error by s / a near t = T, so its error can exceed the prior's many times.")
    return Section("fingerprints", "Dataset fingerprints (Fig. 4)", text, tables=tables, charts=charts)


def conditioning_and_loss(d: StudyData) -> Section | None:
    t = d.ok_trials()
    charts, tables = [], []
    c = d.conditioning
    if not c.empty:
        m = c.melt(id_vars=["dataset", "partner", "seed", "t"], value_vars=["with_image", "without_image"],
                   var_name="input", value_name="error")
        m["input"] = np.where(m.input == "with_image", "E2, with the image", np.where(
            m.partner == MASK_ONLY, "E3 (mask only, matched model)", "same E2 model, null image (condition dropout)"))
        m = m.groupby(["dataset", "input", "t"], as_index=False).error.mean()
        charts.append(("conditioned_vs_unconditioned", alt.Chart(m).mark_line().encode(
            x=alt.X("t:Q", title="diffusion step t"), y=alt.Y("error:Q", title="mask-prediction MSE (x0 space)"),
            color=alt.Color("input:N", title=None), column=alt.Column("dataset:N", title=None)
        ).properties(width=W, height=H)))
        gap = findings.conditioning_gap(d)
        if not gap.empty:
            tables.append(_table(gap))
    curves = d.curves.merge(t[["trial_id", "dataset", "experiment"]], on="trial_id")
    loss = curves[curves.kind == TRAIN_LOSS]
    if not loss.empty:
        m = loss.groupby(["dataset", "experiment", "t"], as_index=False).value.mean()
        m["value"] = m.value / m.groupby(["dataset", "experiment"]).value.transform("mean")
        m["t + 1"] = m.t + 1
        m["task"] = m.experiment.map(kind_title)
        charts.append(("training_loss_over_t", alt.Chart(m).mark_line(point=True).encode(
            x=alt.X("t + 1:Q", title="diffusion step t + 1 (log scale)", scale=alt.Scale(type="log")),
            y=alt.Y("value:Q", title="eps-space training loss / its mean", scale=alt.Scale(type="log")),
            color="task:N", column=alt.Column("dataset:N", title=None)).properties(width=W, height=H)))
        shape = findings.loss_shape(d)
        if not shape.empty:
            tables.append(_table(shape))
    if not charts:
        return None
    return Section("conditioning", "Conditioning and training loss over t (Fig. 3)",
                   "Left: mask error over t of each E2 model (with the image) and of its matching E3 model (same "
                   "dataset, architecture, schedule, T, resolution and seed, trained without the image), mean over "
                   "seeds; the table gives their relative gap (E3 - E2) / E3 where E3 > 0.05, below the dataset's "
                   "t_half, and the t where they part relative to t_half. "
                   "Right: the eps-space training loss binned by t on log-spaced bins (dense near t = 0), "
                   "accumulated over the part of training set by train.loss_curve_from (0.75: the last quarter, "
                   "as the paper), each curve divided by its mean; the table gives the dip statistics per seed "
                   "(descriptive: the verdict of finding (a) comes from the post-hoc loss over t on kept "
                   "checkpoints, python -m diffseg.analysis.loss_over_t).",
                   tables=tables, charts=charts)


def _arms(d: StudyData) -> pd.DataFrame:
    return d.ok_trials().dropna(subset=["arm"])


def comparison(d: StudyData) -> Section | None:
    t = _arms(d)
    if t.empty or t.arm.nunique() < 2:
        return None
    charts = []
    for metric, title in (("test_iou", "test IoU"), ("test_ece", "test ECE"), ("test_x0_error", "test x0 error")):
        if metric not in t or t[metric].isna().all():
            continue
        base = alt.Chart(t.dropna(subset=[metric])).encode(y=alt.Y("arm:N", title=None))
        chart = (base.mark_point(filled=True, opacity=0.6).encode(x=alt.X(f"{metric}:Q", title=title))
                 + base.mark_tick(color="black", thickness=2).encode(x=f"mean({metric}):Q")
                 ).properties(width=W, height=alt.Step(16)).facet(column=alt.Column("dataset:N", title=None))
        charts.append((f"{metric}_per_arm", chart))
    h = d.history.merge(t[["trial_id", "arm", "dataset", "seed", "selection_metric"]], on="trial_id")
    tables = []
    for metric in sorted(t.selection_metric.dropna().unique()):  # never compare val IoU with val x0 error
        if metric in h and h[metric].notna().any():
            hm = h[h.selection_metric == metric].dropna(subset=[metric]).groupby(
                ["dataset", "arm", "step"], as_index=False)[metric].mean()
            charts.append((f"validation_over_steps_{metric}", alt.Chart(hm).mark_line(point=True).encode(
                x=alt.X("step:Q", title="training step"), y=alt.Y(f"{metric}:Q", title=f"validation {metric} (EMA)"),
                color="arm:N",
                column=alt.Column("dataset:N", title=None)).properties(width=W, height=H)))
    ranks = findings.arm_ranks(d)
    if not ranks.empty:
        tables.append(_table(ranks, d.run_links()))
    text = ("Final test metrics per arm (points: seeds, tick: mean) and validation over training steps. The table "
            "lists every arm on every dataset, ranked by its mean validation metric over seeds (val_iou for "
            "E1/E2, val_x0_error for E3/E4), with the test metrics as mean and 95 % interval over seeds"
            + (" and a link to each seed's MLflow run" if d.mlflow_url else "") + f". Ranking: {RANK_RULE}; the "
            f"registered model is the {BEST_RULE}, so it can belong to an arm of rank > 1 (column 'holds the best "
            "trial').")
    c = d.comparisons
    if not c.empty:
        charts.append(("paired_difference_vs_baseline", _paired_chart(c)))
        tables.append(_table(c.assign(**{"95% CI": c.ci_low.round(4).astype(str) + " to " + c.ci_high.round(4)
                                         .astype(str)})[[col for col in PAIRED_SHOWN if col in c or col == "95% CI"]]
                             .round(4)))
        text += " " + paired_summary(c)
    return Section("comparison", "Arm comparison", text, tables=tables, charts=charts)


def _paired_chart(c: pd.DataFrame) -> alt.Chart:
    base = alt.Chart(c).encode(y=alt.Y("arm:N", title=None))
    return (base.mark_rule().encode(x=alt.X("ci_low:Q", title="arm - baseline (per-image, paired), 95% CI"),
                                    x2="ci_high:Q")
            + base.mark_point(filled=True).encode(x="diff:Q", color=alt.Color("better:N", title="beats baseline"))
            + alt.Chart(c).mark_rule(strokeDash=[3, 3], color="gray").encode(x=alt.datum(0))
            ).properties(width=W, height=alt.Step(18)).facet(row=alt.Row("metric:N", title=None),
                                                             column=alt.Column("dataset:N", title=None))


def paired_summary(c: pd.DataFrame) -> str:
    """The arms that beat the baseline with confidence (95 % interval on the better side of zero and Holm p below
    0.05), in words."""
    base = ", ".join(sorted(c.baseline.unique()))
    wins = [f"{r.arm} on {r.dataset} ({r.metric} {r['diff']:+.3f})" for _, r in c[c.better].iterrows()]
    return (f"Paired against the baseline arm {base} (bootstrap over test images, seeds kept together, Holm over "
            f"arms): " + ("; ".join(wins) + " beat the baseline with confidence." if wins else
                          "no arm beats the baseline with confidence."))


def calibration(d: StudyData) -> Section | None:
    t = _arms(d)
    r = d.reliability.merge(t[["trial_id", "arm", "dataset"]], on="trial_id")
    if r.empty:
        return None
    r = r.assign(cw=r["count"] * r.confidence, aw=r["count"] * r.accuracy)
    agg = r.groupby(["dataset", "arm", "bin"], as_index=False)[["count", "cw", "aw"]].sum()
    agg = agg[agg["count"] > 0].assign(confidence=lambda x: x.cw / x["count"], accuracy=lambda x: x.aw / x["count"])
    diag = pd.DataFrame({"confidence": [0, 1], "accuracy": [0, 1]})
    charts = []
    for ds in sorted(agg.dataset.unique()):
        lines = alt.Chart(agg[agg.dataset == ds]).mark_line(point=True).encode(
            x=alt.X("confidence:Q", title="predicted foreground probability (bin mean)",
                    scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("accuracy:Q", title="foreground frequency", scale=alt.Scale(domain=[0, 1])), color="arm:N")
        ref = alt.Chart(diag).mark_line(color="gray", strokeDash=[4, 4]).encode(x="confidence:Q", y="accuracy:Q")
        charts.append((f"reliability_{ds}", (ref + lines).properties(width=W, height=W, title=ds)))
    galleries = [(ds, arm, int(grp.seed.iloc[0]), p) for (ds, arm), grp in t.sort_values("seed").groupby(
        ["dataset", "arm"]) if (p := d.gallery(grp.trial_name.iloc[0])) is not None]
    images = [(f"{ds} / {arm} (seed {seed})", "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode())
              for ds, arm, seed, p in galleries[:GALLERY_CAP]]
    tables = []
    en = findings.ece_vs_n(d)
    if not en.empty and en.N.nunique() > 1:
        en = en.assign(model=en.architecture + " " + en.experiment.str.upper() + " " + en.arm.astype(str))
        m = en.groupby(["dataset", "model", "N"], as_index=False)[["ece", "iou"]].mean()
        charts.append(("ece_vs_ensemble_size", alt.Chart(m).mark_line(point=True).encode(
            x=alt.X("N:Q", title="ensemble members N", scale=alt.Scale(type="log")),
            y=alt.Y("ece:Q", title="test ECE (mean of per-image 10-bin ECE)"), color="model:N",
            column=alt.Column("dataset:N", title=None)).properties(width=W, height=H)))
    cal = findings.calibration(d)
    if not cal.empty:
        tables.append(_table(cal))
    return Section("calibration", "Calibration and uncertainty",
                   "E1 vs each E2 arm: test IoU and vote-fraction ECE per architecture and dataset (mean and 95 % "
                   "bootstrap interval over independent test cases, seeds nested within cases; paired difference "
                   "E2 - E1 with n of cases, the smallest reachable p and the smallest detectable effect), the "
                   "grey-level mean's ECE and the members' error, binariness and probability on the background "
                   "beside it; ECE against the ensemble size N (the vote fraction of N members takes N + 1 values, "
                   "so ECE depends on N); reliability diagrams of the pooled test pixels per arm (10 "
                   "equal-width bins; the diagonal is perfect calibration) and uncertainty galleries (the first "
                   "test images of each arm's lowest seed; columns: image, ground truth, mean foreground "
                   "probability, 2 x std over members" + (f"; {len(images)} of {len(galleries)} shown, one per "
                   "dataset and arm in alphabetical order" if len(galleries) > len(images) else "") + ").",
                   tables=tables, charts=charts, images=images)


IGNORED = {"cfg.seed", "cfg.data.dataset", "cfg.output_dir", "cfg.data.cache_dir", "cfg.data.data_root"}


def _category(value) -> str:
    """A config value as a chart category: a missing value is the field's default, an empty mapping 'defaults'."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return "default"
    return "defaults" if value == "{}" else str(value)


def search_overview(d: StudyData) -> Section | None:
    """Only for searched studies (Optuna): a grid study's arms are compared in the arm comparison."""
    if d.meta.get("algorithm", "grid") == "grid":
        return None
    t = _arms(d)
    cols = [c for c in t.columns if c.startswith("cfg.") and c not in IGNORED and t[c].nunique(dropna=False) > 1
            and not (t[c].dtype == "string" and t[c].str.len().max() > 80)]
    if not cols or t.best_val.isna().all():
        return None
    charts = []
    for metric, grp in t.groupby("selection_metric"):
        for c in cols[:8]:
            name = c[4:]
            numeric = pd.api.types.is_numeric_dtype(grp[c]) and grp[c].nunique() > 4
            df = grp[[c, "best_val", "dataset"]].rename(columns={c: name})
            df[name] = df[name].astype(float) if numeric else df[name].astype(object).map(_category)
            charts.append((f"effect_{name}_{metric}", alt.Chart(df.dropna(subset=[name])).mark_point(
                filled=True, opacity=0.7).encode(x=alt.X(f"{name}:{'Q' if numeric else 'N'}", title=name),
                                                 y=alt.Y("best_val:Q", title=f"best validation {metric}"),
                                                 color="dataset:N").properties(width=W, height=H, title=name)))
    return Section("search", "Search overview",
                   "Per-parameter effect on the selection metric: every searched trial one point (its best "
                   "validation value); 'default' marks a trial that left the parameter at its default.",
                   charts=charts)


SECTIONS = (summary, table1, fingerprints, conditioning_and_loss, comparison, calibration, search_overview)


def build_sections(d: StudyData) -> list[Section]:
    return [s for s in (fn(d) for fn in SECTIONS) if s is not None]
