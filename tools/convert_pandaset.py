"""`python tools/convert_pandaset.py ARGS` is `bev-reid convert-pandaset ARGS` (see its --help)."""

import sys

from bev_reid.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert-pandaset", *sys.argv[1:]]))
