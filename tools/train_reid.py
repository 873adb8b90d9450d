"""`python tools/train_reid.py ARGS` is `bev-reid train-reid ARGS`.

See `bev-reid train-reid --help`.
"""

import sys

from bev_reid.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-reid", *sys.argv[1:]]))
