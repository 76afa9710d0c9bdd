"""``flk agent``: build PCS from event streams, submit them, generate load.

Subcommands:

* ``build --input FILE --shard-id S --epoch N [--tenant T] [--seed N] [--format csv|jsonl|npy]``
  prints one PCS as JSON on stdout. Keys come only from the environment
  (``PCS_SIGN_ALG``, ``PCS_HMAC_KEY``, ``PCS_ED25519_PRIV_B64``, ``TENANT_ID``),
  never from argv.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from flk.impl.errors import InvalidInput


def _int(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="agent_command", metavar="SUBCOMMAND", parser_class=type(p))
    b = sub.add_parser("build", help="build and sign one PCS from an event stream; prints JSON")
    b.add_argument("--input", required=True, help="event stream file (CSV, JSONL or .npy)")
    b.add_argument("--shard-id", required=True)
    b.add_argument("--epoch", required=True, type=_int)
    b.add_argument("--tenant", default=None, help="tenant id (default: $TENANT_ID or 'default')")
    b.add_argument("--seed", type=_int, default=0, help="coh-star direction seed (default 0)")
    b.add_argument("--format", choices=("csv", "jsonl", "npy"), default=None,
                   help="stream format (default: from the file extension)")
    b.add_argument("--unsigned", action="store_true", help="omit the signature (no key needed)")
    b.add_argument("--compact", action="store_true", help="one line of JSON instead of indented")


def _read_file(path: str) -> bytes:
    from flk.impl.cli import UsageError

    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise UsageError(f"--input {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"--input {path}: is a directory") from None
    except PermissionError:
        raise UsageError(f"--input {path}: permission denied") from None
    except OSError as exc:
        raise UsageError(f"--input {path}: {exc.strerror}") from None


def _build(args) -> int:
    from flk.impl import agent
    from flk.impl.pcs import check_epoch, check_shard_id

    check_shard_id(args.shard_id)
    check_epoch(args.epoch)
    fmt = args.format or agent.detect_format(args.input)
    raw = _read_file(args.input)
    signer = None if args.unsigned else agent.signer_from_env(os.environ, args.tenant)
    pcs = agent.build_pcs_from_stream(raw, fmt, args.shard_id, args.epoch, signer, seed=args.seed)
    if args.compact:
        print(json.dumps(pcs, sort_keys=True, separators=(",", ":")))
    else:
        print(json.dumps(pcs, sort_keys=True, indent=2))
    return 0


def run(args) -> int:
    from flk.impl.cli import UsageError

    cmd = getattr(args, "agent_command", None)
    if cmd is None:
        raise UsageError("missing subcommand: build")
    try:
        if cmd == "build":
            return _build(args)
    except InvalidInput as exc:
        raise UsageError(str(exc)) from None
    print(f"flk agent: unknown subcommand {cmd}", file=sys.stderr)
    return 2
