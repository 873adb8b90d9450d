"""`python tools/track.py ARGS` is `bev-reid track ARGS`.

See `bev-reid track --help`.
"""

import sys

from bev_reid.cli import main

if __name__ == "__main__":
    sys.exit(main(["track", *sys.argv[1:]]))
