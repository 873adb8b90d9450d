"""`python tools/demo.py ARGS` is `bev-reid demo ARGS` (see `bev-reid demo --help`)."""

import sys

from bev_reid.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
