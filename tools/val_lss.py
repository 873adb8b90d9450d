"""`python tools/val_lss.py ARGS` is `bev-reid val-lss ARGS` (see `bev-reid val-lss --help`)."""

import sys

from bev_reid.cli import main

if __name__ == "__main__":
    sys.exit(main(["val-lss", *sys.argv[1:]]))
