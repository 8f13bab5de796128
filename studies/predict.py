#!/usr/bin/env python
"""Segment a folder of images with a model a study logged to MLflow: see ``diffseg.studies.predict`` (``--help``)."""

import sys

from diffseg.studies.predict import main

if __name__ == "__main__":
    sys.exit(main())
