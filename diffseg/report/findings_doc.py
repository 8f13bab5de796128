"""``python -m diffseg.report.findings_doc --runs DIR --out docs/findings``: the findings of the paper as a
Markdown page (tables with cases, seeds and 95 % intervals, verdicts) plus small PNG figures, from the Parquet
exports of the ``calibration_targets``, ``long_training``, ``findings``, ``fingerprints``, ``weighting_schedules``
and ``final_noise_levels`` studies in one runs folder (a missing study is noted, not invented); ``long_training``
shows its post-hoc loss over t (``analysis.loss_over_t``). Exit 0, or 2 when none of the studies has exports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from ..experiments.kinds import MASK_ONLY
from ..process import exit_now
from . import findings
from .data import NoExports, load_study
from .sections import build_sections

STUDIES = ("calibration_targets", "long_training", "findings", "fingerprints", "weighting_schedules",
           "final_noise_levels")
FIGURES = ("training_loss_over_t", "conditioned_vs_unconditioned", "ece_vs_ensemble_size", "fingerprint_")


def _md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False) if not df.empty else "_no data_"


def write_findings(runs: Path, out: Path, studies: tuple[str, ...] = STUDIES) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"# Findings on the real samples (runs folder `{runs.name}`)\n"]
    loaded = 0
    for study in studies:
        try:
            d = load_study(runs, study)
        except NoExports:
            parts.append(f"## {study}\n\n_not run (no exports in {runs / 'exports' / study})_\n")
            continue
        loaded += 1
        m = d.meta
        parts.append(f"## {study}\n\nbudget `{m.get('budget')}`, git `{m.get('git_commit')}`, "
                     f"{m.get('trials')} trials ({int(d.ok_trials().shape[0])} ok), hardware {m.get('hardware')}, "
                     f"datasets {', '.join(f'{k} ({v[:12]})' for k, v in sorted(m.get('datasets', {}).items()))}\n")
        tables = {"(a) eps-loss over t measured post hoc on kept checkpoints (verdict)":
                  findings.loss_over_t(runs, study),
                  "(a) running training loss over t: segmentation vs generation (descriptive)": findings.loss_shape(d),
                  "(b) mask error with the image (E2) vs without (matching E3)": findings.conditioning_gap(d),
                  "(c) fingerprints: training-free vs trained E3 on the same test masks (n = E3 trials)":
                  findings.fingerprint_agreement(d)
                  if (d.ok_trials().experiment == MASK_ONLY).any() else pd.DataFrame(),
                  "(d) calibration: feed-forward (E1) vs diffusion (E2), vote-fraction ECE, n = test cases":
                  findings.calibration(d),
                  "the stronger training-free baseline (blur + Otsu, all foreground) vs the models":
                  findings.training_free_baseline(d),
                  "(e) arm ranks (by validation; test metrics beside)":
                  findings.arm_ranks(d).drop(columns="runs", errors="ignore")
                  if d.ok_trials().arm.nunique() > 1 and study not in ("findings", "fingerprints") else pd.DataFrame()}
        for title, df in tables.items():
            if not df.empty:
                parts.append(f"### {title}\n\n{_md(df)}\n")
                if title.startswith("(c)"):
                    parts.append(findings.fingerprint_order(df) + "\n")
        posthoc = findings.loss_over_t_chart(runs, study)
        if posthoc is not None:
            png = out / f"{study}_loss_over_t_posthoc.png"
            posthoc.save(str(png), scale_factor=1.0)
            parts.append(f"![{study}: eps-loss over t per checkpoint, optimal mask denoiser dashed]({png.name})\n")
        for section in build_sections(d):
            for name, chart in section.charts:
                if name.startswith(FIGURES):
                    png = out / f"{study}_{name}.png"
                    chart.save(str(png), scale_factor=1.0)
                    parts.append(f"![{study}: {name}]({png.name})\n")
        for note in d.notes:
            parts.append(f"> note: {note}\n")
    if not loaded:
        raise NoExports(f"{runs}: none of {list(studies)} has exports")
    path = out / "findings.md"
    path.write_text("\n".join(parts))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffseg.report.findings_doc", description=__doc__.splitlines()[0])
    p.add_argument("--runs", required=True, help="the --out folder of the studies")
    p.add_argument("--out", default="docs/findings", help="where findings.md and the PNGs go")
    p.add_argument("--study", action="append", default=None, help=f"studies to include (default: {list(STUDIES)})")
    args = p.parse_args(argv)
    try:
        path = write_findings(Path(args.runs).resolve(), Path(args.out), tuple(args.study or STUDIES))
    except NoExports as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"findings: {path}")
    return 0


if __name__ == "__main__":
    exit_now(main())
