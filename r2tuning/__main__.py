"""``python -m r2tuning``: the same as the ``r2tuning`` command."""

import sys

from .cli import main

sys.exit(main())
