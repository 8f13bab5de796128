#!/usr/bin/env python
"""Re-create a study's Parquet exports from MLflow: see ``diffseg.studies.export_cli`` (``--help``)."""

import sys

from diffseg.studies.export_cli import main

if __name__ == "__main__":
    sys.exit(main())
