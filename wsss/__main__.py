"""``python -m wsss ...``: the ``wsss`` command."""

from wsss.cli import run

if __name__ == "__main__":
    run()
