"""``python -m bev_reid`` is the ``bev-reid`` command."""

import sys

from bev_reid.cli import main

sys.exit(main())
