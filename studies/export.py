#!/usr/bin/env python
"""Re-create a study's Parquet exports from MLflow alone:
``python studies/export.py --study NAME [--out runs] [--tracking-uri URI] [--parent-run-id ID]``."""

import argparse
import sys
from pathlib import Path

from diffseg.studies.export import export_study
from diffseg.studies.tracking import default_tracking_uri


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="studies/export.py", description=__doc__.splitlines()[0])
    p.add_argument("--study", required=True)
    p.add_argument("--out", default="runs", help="the folder the study wrote (exports go to <out>/exports/<study>)")
    p.add_argument("--tracking-uri", default=None, help="default: sqlite <out>/mlflow.db")
    p.add_argument("--parent-run-id", default=None, help="default: the study's latest invocation")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    try:
        paths = export_study(args.tracking_uri or default_tracking_uri(out), args.study,
                             out / "exports" / args.study, args.parent_run_id)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
