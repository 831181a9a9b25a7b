"""``python -m g2g.run forget FOLDER``: delete a run's folder (record, checkpoint, folds),
so the next start of the same config trains it anew.

The folder is named in the run's log; :mod:`g2g.lifecycle.record` owns it."""

from __future__ import annotations

import argparse
import sys

from g2g.files import path_argument
from g2g.lifecycle.record import RecordError, forget


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m g2g.run", description=" ".join(__doc__.split("\n\n")[0].split()))
    commands = parser.add_subparsers(dest="command", required=True)
    forget_parser = commands.add_parser("forget", help="delete a run's folder so that it trains again")
    forget_parser.add_argument("folder", nargs="+", type=path_argument,
                               help="CHECKPOINT_DIR/LABEL_HASH (named in the run's log)")
    arguments = parser.parse_args(argv)
    for folder in arguments.folder:
        try:
            print(f"deleted {forget(folder)}")
        except RecordError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
