"""`python tools/synth.py ARGS` is `bev-reid synth ARGS` (see `bev-reid synth --help`)."""

import sys

from bev_reid.cli import main

if __name__ == "__main__":
    sys.exit(main(["synth", *sys.argv[1:]]))
