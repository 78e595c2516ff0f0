"""``python -m service.worker``: the same as ``r2tuning worker``."""

import sys

from .main import main

sys.exit(main())
