"""``python -m flows ...``: the same command line as ``wsss flow ...`` (an alias)."""

import sys

from wsss.cli import main

if __name__ == "__main__":
    sys.exit(main(["flow", *sys.argv[1:]]))
