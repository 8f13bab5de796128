"""``python -m diffseg.report``: the same command as its top-level script (``--help``)."""

from ..process import exit_now
from .cli import main

exit_now(main())
