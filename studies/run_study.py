#!/usr/bin/env python
"""Run a study: ``python studies/run_study.py --study weighting_schedules`` (``--help`` for every flag)."""

from diffseg.process import exit_now
from diffseg.studies.cli import main

if __name__ == "__main__":
    exit_now(main())
