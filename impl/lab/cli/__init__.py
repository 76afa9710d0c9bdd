"""The ``flk`` command line: one entry point, one module per subcommand.

Each subcommand lives in ``flk.impl.lab.cli.cmd_<name>`` (dashes become
underscores) and exports ``configure(parser)`` and ``run(args) -> int``.
Modules are imported lazily so ``flk --help`` stays fast.

Exit codes: 0 success/valid, 1 a check failed (invariant, proof, conformance),
2 bad input or usage (a clear message on stderr, never a traceback), also an
output location or a file the operating system refuses. Commands that write
artifacts check their output location first (:func:`output_dir`,
:func:`output_file`), before any work.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import pathlib
import sys

from ...core.errors import InvalidInput

# name -> one-line help
COMMANDS: dict[str, str] = {
    "demo": "run the whole lab end to end on embedded defaults",
    "serve": "run the deployable verifier server (ASGI, SQLite by default)",
    "agent": "build PCS from event streams, submit them, generate load",
    "sim": "deterministic chaos/DR simulator: list, run, validate, reference, topology, replay, sweep, diff, "
           "shrink, report, calibrate, explore, coverage, causality",
    "prove": "run the Z3/Hypothesis proofs of the invariants",
    "conformance": "conformance kit: vectors via an adapter, server black-box suite",
    "bench": "benchmarks; prints one JSON object of named figures with --json",
    "wal": "inspect or verify a write-ahead log directory",
    "audit": "verify a WORM audit log",
    "policy": "compile and diff verification policies",
    "dedup-migrate": "zero-downtime dedup shard migration",
    "vectors": "generate or check the frozen test vectors in spec/vectors",
    "history": "black-box check of a client-observed history (Jepsen style); final reads of a store",
    "check": "exhaustive small-scope model checking of the protocol model (safety, liveness)",
    "operator": "policies as data (ShardMigration, CRRPolicy, TieringPolicy): validate, docs, run, status",
    "cluster": "run a scenario on real flk serve regions with real faults (namespaces, nftables, SIGKILL)",
    # observability: KPI dashboard of simulator runs, compliance evidence report
    "kpi": "KPI dashboard of simulator runs: containment, false escalation, cost per trusted task",
    "compliance": "compliance evidence report (SOC 2, ISO 27001) from runs, the audit log, proofs",
}


class UsageError(Exception):
    """Raised by subcommands for bad input; printed and mapped to exit 2."""


def read_input(path: str, what: str = "input file") -> bytes:
    """The bytes of a file named on the command line, or a :class:`UsageError` naming the cause."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        cause = "no such file"
    except IsADirectoryError:
        cause = "is a directory"
    except PermissionError:
        cause = "permission denied"
    except OSError as exc:
        cause = exc.strerror or type(exc).__name__
    raise UsageError(f"{what} {path}: {cause}")


def output_dir(path: str | os.PathLike, what: str = "--out") -> pathlib.Path:
    """``path`` as a directory the command can write into, created with its parents now --
    before the command's work, so that a bad output location is a :class:`UsageError`
    naming the cause, never a traceback (or a finished run lost) at the last step."""
    p = pathlib.Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"{what} {path}: not a directory (a file has that name)") from None
    except NotADirectoryError:
        raise UsageError(f"{what} {path}: a file is in the way (part of the path is not a directory)") from None
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot create it: {exc.strerror or type(exc).__name__}") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path}: not writable")
    return p


def output_file(path: str | os.PathLike, what: str = "--out") -> pathlib.Path:
    """``path`` as a file the command can write (its folder made by :func:`output_dir`)."""
    p = pathlib.Path(path)
    if p.is_dir():
        raise UsageError(f"{what} {path}: is a directory (name a file)")
    output_dir(p.parent, f"{what} {path}: folder")
    return p


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike):
    """A binary file to write a command's output into, renamed over ``path`` only when the
    block ends without an error: a reader never sees half a report, and a failed command
    leaves the old file (or none). Any OS error is a :class:`UsageError` naming the cause."""
    p = pathlib.Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            yield fh
        os.replace(tmp, p)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or type(exc).__name__}") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_output(path: str | os.PathLike, data: bytes | str) -> None:
    """Write a command's output file whole (:func:`atomic_output`)."""
    with atomic_output(path) as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


def count(text: str) -> int:
    """A number of things to show or list (``--show``, ``--limit``): a whole number >= 0 (an
    argparse ``type``: anything else is a usage error, exit 2)."""
    try:
        n = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text[:40]!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {n}")
    return n


MAX_WAIT_S = 86400.0  # a timeout or wait of one command, s (a day; more is a typo, and past ~24 days
# the operating system's poll/sleep overflows)


def finite_number(minimum: float = 0.0, *, strict: bool = False, maximum: float = math.inf,
                  what: str = "number"):
    """An argparse ``type``: a finite float >= ``minimum`` (> with ``strict``) and <= ``maximum``;
    nan, inf, -inf, garbage and a value out of range are a usage error (exit 2) saying which."""
    bound = f"{'>' if strict else '>='} {minimum:g}" + (f" and <= {maximum:g}" if maximum < math.inf else "")

    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {what}: {text[:40]!r}") from None
        if not (math.isfinite(x) and (x > minimum if strict else x >= minimum) and x <= maximum):
            raise argparse.ArgumentTypeError(f"must be a finite {what} {bound}, got {text[:40]}")
        return x

    parse.__name__ = what
    return parse


def seconds(minimum: float = 0.0, *, strict: bool = False, maximum: float = MAX_WAIT_S):
    """An argparse ``type`` for a duration in seconds (a timeout, a wait): :func:`finite_number`
    capped at :data:`MAX_WAIT_S` by default."""
    return finite_number(minimum, strict=strict, maximum=maximum)


MAX_LOCAL_WORKERS = 1024  # local worker processes of one command (more is a typo; past 2^31 the OS overflows)


def local_workers(text: str) -> int:
    """``--workers``: a number of local processes, 1 to :data:`MAX_LOCAL_WORKERS` (an argparse
    ``type``: anything else is a usage error, exit 2)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text[:40]!r}") from None
    if not 1 <= n <= MAX_LOCAL_WORKERS:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_LOCAL_WORKERS}, got {text[:40]}")
    return n


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too; keep its message short
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _module(name: str):
    return importlib.import_module("flk.impl.lab.cli.cmd_" + name.replace("-", "_"))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="flk", description="flk-lab: prove that a PCS ingest-and-verify system keeps its promises")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,  # one line, as written
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if only == name:
            _module(name).configure(p)
        else:  # not the command being run: its module is not imported
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and not argv[0].startswith("-") else None
    if command is not None and command not in COMMANDS:
        build_parser().parse_args(argv)  # prints the usage error, exits 2
    parser = build_parser(only=command)
    args = parser.parse_args(argv)
    if args.version:
        from importlib.metadata import version

        from ...core.accel import extensions_report
        from ...core.canonical import CORE_PATH

        print(f"flk-lab {version('flk-lab')} (core: {CORE_PATH})")
        print(extensions_report())
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(_module(args.command).run(args) or 0)
    except (UsageError, InvalidInput) as exc:
        print(f"flk {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # an optional backend (or a broken install): one line, exit 2
        from ...core.optional import MissingBackend, hint

        print(f"flk {args.command}: error: {exc if isinstance(exc, MissingBackend) else hint(exc.name)}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"flk {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`flk sim list | head`): stop quietly
        with contextlib.suppress(OSError, ValueError):  # what is still buffered goes nowhere at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return 1
    except OSError as exc:  # the machine refused a path the command checks no earlier: one line, no traceback
        where = f": {exc.filename}" if exc.filename is not None else ""
        print(f"flk {args.command}: error: {exc.strerror or type(exc).__name__}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
