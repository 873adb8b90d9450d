"""`python tools/eval_track.py ARGS` is `bev-reid eval-track ARGS`.

See `bev-reid eval-track --help`.
"""

import sys

from bev_reid.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval-track", *sys.argv[1:]]))
