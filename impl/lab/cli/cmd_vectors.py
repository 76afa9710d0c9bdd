"""``flk vectors generate|check [--dir DIR]``: the frozen test vectors in spec/vectors.

``generate`` writes every file the canonical core produces (see
:mod:`flk.impl.lab.vectors`); ``check`` exits 1 if regenerating would create,
change or orphan any file -- ``make test`` runs it so a change to the core that
alters a frozen vector cannot slip in unnoticed.
"""

from __future__ import annotations

import pathlib
import sys


def configure(p) -> None:
    p.add_argument("action", choices=["generate", "check"], help="write the files, or compare them")
    p.add_argument("--dir", default=None, help="vector directory (default: spec/vectors of this install)")


def run(args) -> int:
    from .. import vectors
    from . import UsageError, output_dir

    directory = pathlib.Path(args.dir) if args.dir else vectors.default_dir()
    if args.action == "generate":
        changed = vectors.write(output_dir(directory, "--dir"))
        total = len(vectors.generate())
        print(f"flk vectors: {total} files in {directory}, {len(changed)} changed")
        for name in changed:
            print(f"  wrote {name}")
        return 0
    if not directory.is_dir():
        raise UsageError(f"--dir {directory}: no such directory")
    problems = vectors.check(directory)
    if problems:
        for p in problems:
            print(f"flk vectors check: {p}", file=sys.stderr)
        return 1
    from ...core.canonical import CORE_PATH

    print(f"flk vectors check: {len(vectors.generate())} files in {directory} match the {CORE_PATH} core")
    return 0
