#!/usr/bin/env python
"""Run a study: ``python studies/run_study.py --study weighting_schedules`` (``--help`` for every flag)."""

import sys

from diffseg.studies.cli import main

if __name__ == "__main__":
    sys.exit(main())
