"""``python studies/fingerprint.py --dataset NAME [--schedule linear] [--out DIR]``: fingerprint a dataset.

Writes ``<out>/<dataset>/fingerprint.json`` plus ``fingerprint.html`` and ``fingerprint.png``. ``--trained``
merges the E3 mask-prediction error from a ``fingerprints`` study export (curves.parquet + trials.parquet).
Exit 0 on success, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..data import DatasetError
from ..data.cache import safe_name
from ..data.registry import dataset_names
from ..diffusion import SCHEDULES
from .core import compute_fingerprint, save_fingerprint
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
    p = argparse.ArgumentParser(prog="studies/fingerprint.py", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help=f"{dataset_names()} or folder:PATH / masks:PATH")
    p.add_argument("--data-root", default=None)
    p.add_argument("--schedule", default="linear", choices=sorted(SCHEDULES))
    p.add_argument("--schedule-param", action="append", type=_param, default=[], metavar="KEY=VALUE",
                   help="schedule parameter or modifier, e.g. logsnr_end=-12 (repeatable)")
    p.add_argument("--T", type=int, default=1000)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--trained", default=None, help="a fingerprints study export folder (curves.parquet)")
    p.add_argument("--out", default="runs/fingerprints")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    try:
        trained = load_trained_curve(Path(args.trained), args.dataset) if args.trained else None
        fp = compute_fingerprint(args.dataset, args.schedule, args.T, args.resolution, dict(args.schedule_param),
                                 args.data_root, trained=trained)
    except (DatasetError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) / safe_name(args.dataset, 60)
    path = save_fingerprint(fp, out / "fingerprint.json")
    files = {} if args.no_plot else save_plot(fp, out)
    tf, d = fp["training_free"], fp["derived"]
    print(f"{args.dataset}: {fp['mask_stats']['cases']} masks at {args.resolution} px, fg "
          f"{tf['prior_fg']:.3f}{' (sparse)' if fp['mask_stats']['sparse'] else ''}; {args.schedule} T={args.T}: "
          f"t_half {tf['t_half']}, recoverable until t={d['recoverable_until_t']}, lost from t={d['lost_from_t']}, "
          f"info loss at T {d['info_loss_at_T']:.3f} ({'converged' if d['converged_at_T'] else 'NOT converged'} "
          f"at T), recommended logsnr_end {d['recommended_logsnr_end']:.2f} (schedule: {d['logsnr_T']:.2f})")
    if fp["trained"]:
        print(f"  trained E3 curve: Pearson {fp['trained']['pearson']}, Spearman {fp['trained']['spearman']}")
    print(f"  wrote {path}" + "".join(f", {f}" for f in files.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
