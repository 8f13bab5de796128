"""``python studies/export.py --study NAME [--out runs] [--tracking-uri URI] [--parent-run-id ID]``: re-create a
study's Parquet exports from MLflow alone. Exit 0 on success, 2 when the store has no such study."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..folder import StudyFolder
from ..process import exit_now
from .export import export_study
from .tracking import store_for


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="studies/export.py", description=__doc__.split(":", 1)[1].strip().split(".")[0],
                                epilog="exit codes: 0 exported, 2 no such study or parent run in the store",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--study", required=True, help="study name (its MLflow experiment)")
    p.add_argument("--out", default="runs", help="the folder the study wrote (exports go to <out>/exports/<study>)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: the server the study recorded, else <out>/mlflow.db)")
    p.add_argument("--parent-run-id", default=None, help="the invocation to export (default: the study's latest)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    folder = StudyFolder(Path(args.out))
    try:
        paths = export_study(store_for(folder, args.tracking_uri, args.study), args.study, folder, args.parent_run_id)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    exit_now(main())
