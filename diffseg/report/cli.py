"""``python reports/make_report.py --study NAME [--runs DIR] [--out DIR]``: the analysis of a study as one
self-contained HTML report (plus every chart as PNG), built from the Parquet exports and attached to the
study's MLflow parent run. Exit 0 on success, 2 when the study has no exports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..folder import StudyFolder, is_server
from ..process import exit_now
from .data import NoExports, StudyData, load_study
from .html import render
from .sections import build_sections


def attach_to_mlflow(d: StudyData, out: Path, given: str | None) -> str | None:
    """Attach the report to the study's parent run in its tracking store (``studies.tracking.store_for``: the
    given URI, else the server the study recorded, else the runs folder's own store wherever the folder is now);
    a note when that is not possible."""
    parent = d.meta.get("parent_run_id")
    if not parent:
        return "no parent run in study.json"
    try:
        from mlflow.tracking import MlflowClient

        from ..studies.tracking import probe, store_for

        uri = store_for(StudyFolder(d.runs), given, d.study)
        down = probe(uri)  # a server that does not answer is not waited for (minutes of retries)
        if down:
            return f"not attached to MLflow: {down}"
        client = MlflowClient(uri)
        client.log_artifact(parent, str(out / "report.html"), "report")
        client.log_artifacts(parent, str(out / "charts"), "report/charts")
    except Exception as exc:
        return f"not attached to MLflow ({exc.__class__.__name__}: {exc})"
    return None


def make_report(study: str, runs: Path, out: Path | None = None, attach: bool = True,
                uri: str | None = None) -> dict:
    d = load_study(runs, study)
    d.mlflow_url = next((u for u in (uri, d.meta.get("tracking_uri")) if is_server(u)), None)
    out = out or StudyFolder(runs).reports(study)
    result = render(f"diffseg study report: {study}", build_sections(d), out)
    result["notes"] = list(d.notes)
    if attach:
        note = attach_to_mlflow(d, out, uri)
        if note:
            result["notes"].append(note)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="reports/make_report.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Build a study's report: one self-contained HTML page (summary, Table 1, fingerprints, "
                    "conditioning and loss over t, arm comparison with paired intervals against the baseline arm, "
                    "calibration, search overview) from the study's Parquet exports, every chart also as PNG, "
                    "attached to the study's MLflow parent run.",
        epilog="exit codes: 0 written (a note says when it could not be attached to MLflow, e.g. a tracking server "
               "that does not answer: it is not waited for); 2 the study has no complete, readable exports in --runs")
    p.add_argument("--study", required=True, help="the study name (its exports are in <runs>/exports/<study>)")
    p.add_argument("--runs", default="runs", help="the folder a study wrote with run_study.py --out")
    p.add_argument("--out", default=None, help="default: <runs>/reports/<study>/")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow store to attach the report to (default: the server the study recorded, else the "
                        "runs folder's own mlflow.db, wherever the folder is now)")
    p.add_argument("--no-mlflow", action="store_true", help="do not attach the report to the MLflow parent run")
    args = p.parse_args(argv)
    try:
        r = make_report(args.study, Path(args.runs).resolve(), Path(args.out).resolve() if args.out else None,
                        attach=not args.no_mlflow, uri=args.tracking_uri)
    except NoExports as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in r["notes"]:
        print(f"note: {note}")
    print(f"report: {r['html']} ({r['charts']} charts, PNGs in {r['html'].parent / 'charts'})")
    return 0


if __name__ == "__main__":
    exit_now(main())
