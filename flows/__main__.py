"""``python -m flows ...``: the same command line as ``wsss flow ...`` (an alias)."""

import sys

from wsss.cli import main
from wsss.lifetime import stop_soon_after_interrupt

if __name__ == "__main__":
    stop_soon_after_interrupt()
    sys.exit(main(["flow", *sys.argv[1:]]))
