"""Command line: ``python -m sparktf stop PATH`` stops a streaming sparktf driver.

``PATH`` is the stop file the driver logged when its stream started (see
:mod:`sparktf.stop`); only the path appears on the command line, never the
token inside.  Exit status 0 when the driver accepted the request, 1 if it
could not be reached or refused it, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys

from . import stop
from .errors import SparkTFError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparktf")
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("stop", help="stop a streaming driver gracefully (the "
                              "micro-batch in flight completes)")
    cmd.add_argument("path", help="the stop file the driver logged (mode 0600)")
    cmd.add_argument("--reason", default="", help="a note the driver logs")
    cmd.add_argument("--timeout", type=float, default=30.0, help="seconds to reach the driver")
    args = parser.parse_args(argv)
    try:
        detail = stop.send_stop(args.path, args.reason, args.timeout)
    except SparkTFError as e:
        print(f"sparktf stop: {e}", file=sys.stderr)
        return 1
    print(f"sparktf stop: {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
