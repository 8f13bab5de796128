"""``python studies/fingerprint.py --dataset NAME [--schedule linear] [--out DIR]``: fingerprint a dataset.

Uses the training and validation masks of the case-level split only (never the test split). Writes
``<out>/<dataset>-<identity>/fingerprint.json`` (the same path scheme a study uses under ``<runs>/fingerprints``,
so a study finds it) plus ``fingerprint.html`` and ``fingerprint.png``. ``--trained`` merges the E3
mask-prediction error from a study export (curves.parquet + trials.parquet) matching the same resolution,
schedule and T, with agreement numbers. Exit 0 on success, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..data import DatasetError, PrepConfig
from ..data.registry import dataset_names
from ..diffusion import SCHEDULES
from ..process import exit_now
from .core import (
    FingerprintSpec,
    SplitSpec,
    compute_fingerprint,
    fingerprint_path,
    load_or_compute,
    save_fingerprint,
)
from .plot import save_plot
from .trained import load_trained_curve


def _param(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        return k, json.loads(v)
    except ValueError:
        return k, v


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="studies/fingerprint.py", description=__doc__.split(":", 1)[1].strip().split(
                                ".")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                epilog="exit codes: 0 written; 2 bad input (dataset, schedule, trained export)")
    p.add_argument("--dataset", required=True, help=f"{dataset_names()} or folder:PATH / masks:PATH / nnunet:PATH")
    p.add_argument("--data-root", default=None, help="root folder of the dataset (overrides its default root)")
    p.add_argument("--schedule", default="linear", choices=sorted(SCHEDULES), help="the noise schedule")
    p.add_argument("--schedule-param", action="append", type=_param, default=[], metavar="KEY=VALUE",
                   help="schedule parameter or modifier, e.g. logsnr_end=-12 (repeatable)")
    p.add_argument("--T", type=int, default=1000, help="diffusion steps")
    p.add_argument("--resolution", type=int, default=256, help="square side the masks are resized to (px)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the case-level split (as data.split_seed)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="validation cases (seen by the fingerprint)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out cases the fingerprint never sees")
    p.add_argument("--trained", default=None, help="a study export folder with E3 trials (curves.parquet)")
    p.add_argument("--out", default="runs/fingerprints", help="fingerprint root (a study uses <runs>/fingerprints)")
    p.add_argument("--no-plot", action="store_true", help="write fingerprint.json only (no HTML/PNG chart)")
    args = p.parse_args(argv)
    try:
        spec = FingerprintSpec(args.dataset, PrepConfig(args.resolution), args.schedule, args.T,
                               dict(args.schedule_param), SplitSpec(args.split_seed, args.val_fraction,
                                                                    args.test_fraction))
        if args.trained:
            trained = load_trained_curve(Path(args.trained), args.dataset, args.resolution, args.schedule, args.T)
            fp = compute_fingerprint(spec, args.data_root, trained=trained)
            path = fingerprint_path(Path(args.out), spec, fp["dataset_hash"])
        else:
            fp, path = load_or_compute(Path(args.out), spec, args.data_root, write=False)
    except (DatasetError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    save_fingerprint(fp, path)
    files = {} if args.no_plot else save_plot(fp, path.parent)
    tf, d = fp["training_free"], fp["derived"]
    print(f"{args.dataset}: {fp['split']['samples']} train+val masks ({fp['split']['excluded_test_samples']} test "
          f"masks excluded) at {args.resolution} px, fg {tf['prior_fg']:.3f}"
          f"{' (sparse)' if fp['mask_stats']['sparse'] else ''}; {args.schedule} T={args.T}: "
          f"t_half {_t(tf['t_half'], args.T)}, recoverable until t={_t(d['recoverable_until_t'], args.T)}, "
          f"no better than the prior from t={_t(d['lost_from_t'], args.T)}, error at T {d['error_at_T']:.3f} "
          f"({'converged' if d['converged_at_T'] else 'NOT converged'} at T), recommended logsnr_end "
          f"{d['recommended_logsnr_end']:.2f} (schedule: {d['logsnr_T']:.2f})")
    if fp["trained"]:
        tr = fp["trained"]
        cross = ", ".join(f"{k} {_t(v['training_free'], args.T)} vs {_t(v['trained'], args.T)}"
                          for k, v in tr.items() if k in ("t_005", "t_half", "t_095"))
        print(f"  trained E3 curve (training-free vs trained): {cross}; mean |difference| {tr['mean_abs_diff']:.3f}")
    print(f"  wrote {path}" + "".join(f", {f}" for f in files.values()))
    return 0


def _t(value, T: int) -> str:
    if value is None:
        return f"not reached by t = {T}"
    return f"{value:.0f}"


if __name__ == "__main__":
    exit_now(main())
