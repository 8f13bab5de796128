"""``python -m diffseg.fingerprint``: the same command as its top-level script (``--help``)."""

from ..process import exit_now
from .cli import main

exit_now(main())
