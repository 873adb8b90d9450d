"""`python tools/train_lss.py ARGS` is `bev-reid train-lss ARGS`.

See `bev-reid train-lss --help`.
"""

import sys

from bev_reid.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-lss", *sys.argv[1:]]))
