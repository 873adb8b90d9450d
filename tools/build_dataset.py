"""`python tools/build_dataset.py ARGS` is `bev-reid build-dataset ARGS`.

See `bev-reid build-dataset --help`.
"""

import sys

from bev_reid.cli import main

if __name__ == "__main__":
    sys.exit(main(["build-dataset", *sys.argv[1:]]))
