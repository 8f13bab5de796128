#!/usr/bin/env python
"""Fingerprint a dataset: see ``diffseg.fingerprint.cli`` (``--help``)."""

import sys

from diffseg.fingerprint.cli import main

if __name__ == "__main__":
    sys.exit(main())
