"""`python tools/export.py ARGS` is `bev-reid export ARGS`.

See `bev-reid export --help`.
"""

import sys

from bev_reid.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
