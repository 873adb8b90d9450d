"""`python tools/show_dataset.py ARGS` is `bev-reid show-dataset ARGS`.

See `bev-reid show-dataset --help`.
"""

import sys

from bev_reid.cli import main

if __name__ == "__main__":
    sys.exit(main(["show-dataset", *sys.argv[1:]]))
