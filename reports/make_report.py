#!/usr/bin/env python
"""Build a study report: ``python reports/make_report.py --study NAME [--runs DIR] [--out DIR]``."""

import sys

from diffseg.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
