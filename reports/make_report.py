#!/usr/bin/env python
"""Build a study report: ``python reports/make_report.py --study NAME [--runs DIR] [--out DIR]``."""

from diffseg.process import exit_now
from diffseg.report.cli import main

if __name__ == "__main__":
    exit_now(main())
