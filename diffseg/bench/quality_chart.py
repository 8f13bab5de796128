"""The quality benchmark's trade-off curve (issue 24 §1): per (dataset, target) and sampler, the ensemble's IoU
(points) and ECE difference to DDPM-1000 against model evaluations (log scale), with its 95 % interval over test
images (thick) and the interval the goal's interval flags decide on (thin: Bonferroni's, ``quality.compare``); the
goal drawn in (the +-1 IoU point / +-0.01 ECE band and the budget line at 50x fewer evaluations than the reference)
and the noise floor (DDPM-1000 drawn again against its first draw: how far it is from itself) at the reference's
cost; the reference the settings are compared with is the mean of both draws (``quality.reference``). A setting
reaches the goal where its point lies inside the band left of the budget line. Rendered offline with vl-convert;
``python -m diffseg.bench quality --chart FILE.png``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..files import atomic_path
from .quality import GOAL, same_numbers

# (a setting's difference to the reference, its interval, the redraw's difference to the first draw, title, goal)
METRICS = (("iou_points_vs_ref", "iou_points_ci", "iou_points_vs_first", "IoU vs DDPM-1000 (points)", "iou_points"),
           ("ece_vs_ref", "ece_ci", "ece_vs_first", "ECE vs DDPM-1000", "ece"))


DODGE = 1.08  # the samplers' marks at one evaluation count are drawn this factor apart on the log axis


def _panel(c: dict) -> str:
    learned = "" if c["baseline"]["reference_beats_it"] else ", not learned: not counted"
    return f"{c['dataset']} / {c['target']} (n = {c['n_images']}{learned})"


def rows(result: dict) -> pd.DataFrame:
    """One row per mark: ``kind`` 'setting' (a sampler at some steps), 'floor' (the redraw), 'tolerance' (the
    goal's band edges) and 'budget' (the largest evaluation count that is 50x fewer than the reference's);
    ``drawn_at``: the evaluations, each sampler's dodged by a factor of ``DODGE`` so equal counts do not overlap."""
    out = []
    for c in result["results"]:
        panel, ref_evals = _panel(c), c["reference"]["model_evaluations"]
        for key, ci, floor_key, metric, goal in METRICS:
            base = {"panel": panel, "metric": metric}
            for s, sampler in same_numbers(c["settings"], ("steps", "model_evaluations", key, ci)):
                out.append({**base, "kind": "setting", "sampler": sampler, "steps": s["steps"],
                            "evaluations": s["model_evaluations"], "value": s[key], "lo": s[ci][0], "hi": s[ci][1],
                            "decision_lo": s["decision_ci"][goal][0], "decision_hi": s["decision_ci"][goal][1]})
            if nf := c["noise_floor"]:
                out.append({**base, "kind": "floor", "sampler": "DDPM-1000 redrawn - first draw", "steps": 1000,
                            "evaluations": ref_evals, "value": nf[floor_key], "lo": nf[ci][0], "hi": nf[ci][1]})
            out += [{**base, "kind": "tolerance", "value": sign * GOAL[goal]} for sign in (-1, 1)]
            out.append({**base, "kind": "budget", "evaluations": ref_evals / GOAL["fewer_evaluations"]})
    t = pd.DataFrame(out)
    names = sorted(t.sampler[t.kind == "setting"].unique())
    dodge = {n: DODGE ** (i - (len(names) - 1) / 2) for i, n in enumerate(names)}
    t["drawn_at"] = t.evaluations * t.sampler.map(dodge).fillna(1.0)
    return t


def chart(result: dict):
    """Panels: one column per (dataset, target), one row per metric (independent y scales)."""
    import altair as alt

    data = rows(result)
    x = alt.X("drawn_at:Q", scale=alt.Scale(type="log"), title="model evaluations (log; samplers dodged apart)")
    y = alt.Y("value:Q", title=None)
    kind = alt.datum.kind
    base = alt.Chart()
    settings = base.transform_filter(kind == "setting")
    floor = base.transform_filter(kind == "floor")
    layers = [
        base.transform_filter(kind == "tolerance").mark_rule(color="#2a9d8f", strokeDash=[4, 3]).encode(y=y),
        base.transform_filter(kind == "budget").mark_rule(color="#e76f51", strokeDash=[4, 3]).encode(x=x),
        settings.mark_errorbar(opacity=0.5, thickness=1).encode(x=x, y=alt.Y("decision_lo:Q", title=None),
                                                                y2="decision_hi:Q",
                                                                color=alt.Color("sampler:N", title="sampler")),
        settings.mark_errorbar(opacity=0.6, thickness=3).encode(x=x, y=alt.Y("lo:Q", title=None), y2="hi:Q",
                                                                color="sampler:N"),
        settings.mark_line(point=True).encode(x=x, y=y, color="sampler:N",
                                              tooltip=["sampler:N", "steps:Q", "evaluations:Q", "value:Q", "lo:Q",
                                                       "hi:Q", "decision_lo:Q", "decision_hi:Q"]),
        floor.mark_errorbar(color="black").encode(x=x, y=alt.Y("lo:Q", title=None), y2="hi:Q"),
        floor.mark_point(shape="diamond", color="black", filled=True, size=60).encode(
            x=x, y=y, tooltip=["sampler:N", "value:Q", "lo:Q", "hi:Q"]),
    ]
    drawn = (data.kind == "floor").any()
    black = ["black: DDPM-1000 drawn again minus its first draw (the noise floor)"] if drawn else []
    levels = sorted({f"{100 * c['decision_level']:.4g} %" for c in result["results"]})
    title = alt.TitleParams([f"few-step ensembles against DDPM-1000 ({result['members']} members)",
                             f"intervals: thick 95 %, thin the decision's (Bonferroni, {', '.join(levels)})",
                             "goal: inside the dashed band, left of the dashed budget line",
                             "not worse: above the band's lower IoU edge, below its upper ECE edge", *black],
                            anchor="start")
    return alt.layer(*layers, data=data).properties(width=260, height=200).facet(
        row=alt.Row("metric:N", title=None, sort=[m[3] for m in METRICS]),
        column=alt.Column("panel:N", title=None)).resolve_scale(y="independent").properties(title=title)


def save(result: dict, path: Path) -> Path:
    """The chart as a PNG at ``path``, written whole or not at all."""
    import vl_convert as vlc

    png = vlc.vegalite_to_png(chart(result).to_dict(), scale=1.5)
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(png)
    return Path(path)
