"""What a test run left in its own temp folder: ``make test`` runs pytest with ``TMPDIR`` set
to a new, empty folder and then calls this on it. Anything there besides pytest's own folder
(``pytest-of-<user>``, its three latest runs) and dask's shared scratch folder (lock files
it keeps by design) is a leak -- a temp folder a command or a test made and never removed
-- and fails the run, named. Exit 0 nothing left, 1 leftovers (listed), 2 bad usage."""

from __future__ import annotations

import os
import sys

KEPT_BY_DESIGN = ("pytest-of-", "dask-scratch-space")


def leftovers(folder: str) -> list[str]:
    return sorted(name for name in os.listdir(folder) if not name.startswith(KEPT_BY_DESIGN))


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not os.path.isdir(argv[0]):
        print("usage: check_temp_left.py TEMP_FOLDER (an existing folder)", file=sys.stderr)
        return 2
    left = leftovers(argv[0])
    if left:
        print(f"the test run left {len(left)} item(s) in its temp folder (a leak: remove what you make):",
              file=sys.stderr)
        for name in left[:50]:
            print(f"  {name}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
