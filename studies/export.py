#!/usr/bin/env python
"""Re-create a study's Parquet exports from MLflow: see ``diffseg.studies.export_cli`` (``--help``)."""

from diffseg.process import exit_now
from diffseg.studies.export_cli import main

if __name__ == "__main__":
    exit_now(main())
