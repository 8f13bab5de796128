#!/usr/bin/env python
"""Segment a folder of images with a model a study logged to MLflow: see ``diffseg.studies.predict`` (``--help``)."""

from diffseg.process import exit_now
from diffseg.studies.predict import main

if __name__ == "__main__":
    exit_now(main())
