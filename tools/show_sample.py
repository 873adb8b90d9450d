"""`python tools/show_sample.py ARGS` is `bev-reid show-sample ARGS`.

See `bev-reid show-sample --help`.
"""

import sys

from bev_reid.cli import main

if __name__ == "__main__":
    sys.exit(main(["show-sample", *sys.argv[1:]]))
