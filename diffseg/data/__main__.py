"""``python -m diffseg.data check --dataset NAME [--data-root PATH] [--json]``: exit 0 valid, 2 with every problem."""

from __future__ import annotations

import argparse
import json
import sys

from ..process import exit_now
from .check import check_dataset
from .errors import DatasetError
from .registry import dataset_names, with_label


def _print_table(s: dict) -> None:
    print(f"dataset {s['dataset']} ({s['layout']}): {s['cases']} cases, splits {s['splits']}")
    print(f"  image sizes: {s['image_sizes']}")
    print(f"  mask encoding: {s['mask_encoding']}, empty masks: {s['empty_masks']}")
    for key in ("foreground_fraction", "objects_per_mask"):
        st = s[key]
        print(f"  {key}: min {st['min']:.4g}  median {st['median']:.4g}  mean {st['mean']:.4g}  max {st['max']:.4g}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffseg.data", description="Check and list datasets.",
                                     epilog="exit codes: 0 valid; 2 problems found (all listed) or bad input")
    sub = parser.add_subparsers(dest="command", required=True)
    chk = sub.add_parser("check", help="validate and summarise a dataset",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                         epilog="exit codes: 0 valid; 2 problems found (all listed) or bad input")
    chk.add_argument("--dataset", required=True,
                     help=f"one of {dataset_names()} or folder:PATH / masks:PATH / nnunet:PATH")
    chk.add_argument("--label", default=None, help="nnunet:PATH only: the foreground label (a name in dataset.json)")
    chk.add_argument("--data-root", default=None, help="root folder of the dataset (overrides its default root)")
    chk.add_argument("--json", action="store_true", help="print the summary (or the problems) as JSON")
    sub.add_parser("list", help="list registered datasets")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(dataset_names()))
        return 0
    try:
        summary = check_dataset(with_label(args.dataset, args.label), args.data_root)
    except (DatasetError, ValueError) as exc:
        problems = exc.problems if isinstance(exc, DatasetError) else [str(exc)]
        if args.json:
            print(json.dumps({"dataset": args.dataset, "valid": False, "problems": problems}))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**summary, "valid": True}))
    else:
        _print_table(summary)
    return 0


if __name__ == "__main__":
    exit_now(main())
