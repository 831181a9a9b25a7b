"""``python -m g2g.tracking relog FILE``: log what a run could not log when its MLflow
store failed (the fallback file of :class:`g2g.tracking.run_logger.RunLogger`)."""

from __future__ import annotations

import argparse

from g2g.files import path_argument


def main(argv: list[str] | None = None) -> int:
    """``python -m g2g.tracking relog FILE``: log what a run could not log when its
    MLflow store failed."""
    parser = argparse.ArgumentParser(prog="python -m g2g.tracking", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    relog_parser = commands.add_parser("relog", help="log a fallback file to its MLflow run")
    relog_parser.add_argument("file", type=path_argument)
    args = parser.parse_args(argv)
    from g2g.tracking.run_logger import relog  # noqa: PLC0415 (MLflow only after the arguments)

    count = relog(args.file)
    print(f"logged {count} entries from {args.file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
