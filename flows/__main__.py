"""``python -m flows ...``: the same command line as ``wsss flow ...`` (an alias)."""

from wsss.cli import run

if __name__ == "__main__":
    run(prefix=("flow",))
