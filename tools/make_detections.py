"""`python tools/make_detections.py ARGS` is `bev-reid make-detections ARGS`.

See `bev-reid make-detections --help`.
"""

import sys

from bev_reid.cli import main

if __name__ == "__main__":
    sys.exit(main(["make-detections", *sys.argv[1:]]))
