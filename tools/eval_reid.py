"""`python tools/eval_reid.py ARGS` is `bev-reid eval-reid ARGS`.

See `bev-reid eval-reid --help`.
"""

import sys

from bev_reid.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval-reid", *sys.argv[1:]]))
