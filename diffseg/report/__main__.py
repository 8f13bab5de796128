"""``python -m diffseg.report``: the same command as its top-level script (``--help``)."""

import sys

from .cli import main

sys.exit(main())
