"""``python -m diffseg.bench NAME [--json]``: the project's one benchmark entry point."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from ..diffusion.targets import TARGETS
from ..process import exit_now

BENCHES = {"data": "data", "models": "models", "sampling": "sampling", "fingerprint": "fingerprint",
           "quality": "quality", "speedups": "speedups", "study": "study", "threads": "threads", "cluster": "cluster",
           "gpu": "gpu"}
# "all": the single-machine benchmarks
ALL = ("data", "models", "sampling", "fingerprint", "quality", "study", "threads")


def _bench_args(name: str, args) -> dict:
    """The options a benchmark takes, those given only."""
    given = {"quality": {"datasets": args.dataset, "targets": args.target, "images": args.images,
                         "resolution": args.resolution, "train_steps": args.train_steps, "cache": args.cache,
                         "seed": args.seed},
             "study": {"repeat": args.repeat, "at_once": args.at_once or None},
             "threads": {"repeat": args.repeat}}.get(name, {})
    return {k: v for k, v in given.items() if v is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffseg.bench")
    parser.add_argument("name", choices=[*BENCHES, "all"])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="quality: keep each (dataset, target) result in DIR and reuse it; a run stopped part-way "
                             "continues from the weights and evaluations it kept there")
    parser.add_argument("--dataset", action="append", default=None, help="quality: only these datasets (repeatable)")
    parser.add_argument("--target", action="append", default=None, choices=TARGETS,
                        help="quality: only these prediction targets (repeatable)")
    parser.add_argument("--images", type=int, default=None, help="quality: test images per dataset (default 16)")
    parser.add_argument("--resolution", type=int, default=None, help="quality: px instead of the cpu budget's")
    parser.add_argument("--seed", type=int, default=None,
                        help="quality: the trial's seed (default 0): another trained model on the same test images")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="quality: training steps instead of the cpu budget's")
    parser.add_argument("--chart", type=Path, default=None, metavar="FILE.png",
                        help="quality: also draw the trade-off curve (IoU and ECE vs model evaluations) to FILE.png")
    parser.add_argument("--repeat", type=int, default=None,
                        help="study, threads: runs (of the study/loop pair; of each placement), the medians reported "
                             "(default 3)")
    parser.add_argument("--at-once", action="store_true",
                        help="study: run the study and the plain loop at the same time, each on half the CPUs (the "
                             "machine's drift shared by both sides), the halves swapped every run")
    args = parser.parse_args(argv)
    if args.at_once and args.name != "study":
        parser.error("--at-once: only the study benchmark runs two sides")
    if args.chart is not None:  # checked before an hour of benchmark, not after it
        if args.name != "quality":
            parser.error("--chart: only the quality benchmark draws a chart")
        if args.chart.suffix != ".png" or not args.chart.parent.is_dir():
            parser.error(f"--chart {args.chart}: must be a .png file in an existing folder")
    names = list(ALL) if args.name == "all" else [args.name]
    results = {}
    for name in names:
        mod = importlib.import_module(f"diffseg.bench.{BENCHES[name]}")
        results[name] = mod.run(**_bench_args(name, args))
        if not args.json:
            print(mod.table(results[name]))
    if args.chart is not None:
        from .quality_chart import save

        save(results["quality"], args.chart)
    if args.json:
        print(json.dumps(results[names[0]] if len(names) == 1 else results))
    return 0 if all(r.get("passed", True) for r in results.values()) else 1


if __name__ == "__main__":
    exit_now(main())
