"""Fingerprint plot: normalised mask error over t (training-free line, trained E3 points when merged) above the
derived weighting; saved as self-contained HTML (Vega inlined, works offline) and PNG via vl-convert."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd


def fingerprint_chart(fp: dict) -> alt.VConcatChart:
    tf = fp["training_free"]
    curve = pd.concat([pd.DataFrame({"t": tf["t"], "value": tf[k], "curve": name}) for k, name in
                       (("error", "training-free"), ("foreground", "training-free, foreground part"),
                        ("background", "training-free, background part"))])
    layers = [alt.Chart(curve).mark_line().encode(
        x=alt.X("t:Q", title="diffusion step t"),
        y=alt.Y("value:Q", title="mask error / prior error 4π(1-π)", scale=alt.Scale(domain=[0, 1.05])),
        color=alt.Color("curve:N", title=None))]
    if fp.get("trained"):
        tr = fp["trained"]
        pts = pd.DataFrame({"t": tr["t"], "value": tr["normalised"], "curve": "trained E3 (normalised MSE)"})
        layers.append(alt.Chart(pts).mark_point(filled=True).encode(x="t:Q", y="value:Q", color="curve:N"))
    d = fp["derived"]
    title = (f"{fp['dataset']} ({fp['split']['used']}) at {fp['resolution']} px, {fp['schedule']['name']} "
             f"T={fp['schedule']['T']}: t_half = {tf['t_half']}, error at T = {d['error_at_T']:.2f}")
    top = alt.layer(*layers).properties(width=520, height=220, title=title)
    w = pd.DataFrame({"t": tf["t"], "weight": d["weighting"]})
    bottom = alt.Chart(w).mark_area(opacity=0.6).encode(
        x=alt.X("t:Q", title="diffusion step t"), y=alt.Y("weight:Q", title="derived weighting (mean 1)")
    ).properties(width=520, height=120)
    return alt.vconcat(top, bottom)


def save_plot(fp: dict, out_dir: Path) -> dict[str, str]:
    chart = fingerprint_chart(fp)
    html, png = out_dir / "fingerprint.html", out_dir / "fingerprint.png"
    chart.save(str(html), inline=True)
    chart.save(str(png), scale_factor=1.5)
    return {"html": str(html), "png": str(png)}
