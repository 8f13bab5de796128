"""``diffseg COMMAND [ARGS]``: one entry point for every command (installed as a console script); each command
is the same as its script or module (``diffseg study --help`` = ``python studies/run_study.py --help``)."""

from __future__ import annotations

import importlib
import sys

from .process import exit_now

# command -> (module with main(argv), what it does)
COMMANDS = {
    "study": ("diffseg.studies.cli", "run a study: Ray Tune trials tracked in MLflow, exported as Parquet"),
    "predict": ("diffseg.studies.predict", "segment a folder of images with a model a study logged"),
    "report": ("diffseg.report.cli", "build a study's HTML report from its exports"),
    "export": ("diffseg.studies.export_cli", "re-create a study's Parquet exports from MLflow"),
    "reevaluate": ("diffseg.studies.reevaluate", "re-run the final evaluation of a study's trials on saved weights"),
    "loss-over-t": ("diffseg.analysis.loss_over_t", "post-hoc loss over t on a study's kept EMA checkpoints"),
    "fingerprint": ("diffseg.fingerprint.cli", "a dataset's training-free fingerprint"),
    "data": ("diffseg.data.__main__", "check, describe or prepare a dataset"),
    "bench": ("diffseg.bench.__main__", "the benchmarks (models, sampling, quality, study, cluster, gpu, ...)"),
}


def usage() -> str:
    return "usage: diffseg COMMAND [ARGS] (diffseg COMMAND --help)\n\ncommands:\n" + "\n".join(
        f"  {name:12s} {what}" for name, (_, what) in COMMANDS.items())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        from .registry import suggest

        print(f"error: unknown command {argv[0]!r}; {suggest(argv[0], COMMANDS)}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:])


def run() -> None:
    """The console script: ``main`` then ``exit_now``."""
    exit_now(main())


if __name__ == "__main__":
    run()
