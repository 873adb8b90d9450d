"""`python tools/show_tracks.py ARGS` is `bev-reid show-tracks ARGS`.

See `bev-reid show-tracks --help`.
"""

import sys

from bev_reid.cli import main

if __name__ == "__main__":
    sys.exit(main(["show-tracks", *sys.argv[1:]]))
