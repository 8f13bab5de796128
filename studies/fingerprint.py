#!/usr/bin/env python
"""Fingerprint a dataset: see ``diffseg.fingerprint.cli`` (``--help``)."""

from diffseg.fingerprint.cli import main
from diffseg.process import exit_now

if __name__ == "__main__":
    exit_now(main())
