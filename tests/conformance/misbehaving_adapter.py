"""An adapter that misbehaves on purpose, to test that the runner never hangs.

``python misbehaving_adapter.py MODE [OP]``: answers like the reference adapter,
except for requests whose op is ``OP`` (default ``fmt9``), where it:

* ``crash``     -- exits with status 3 without answering;
* ``hang``      -- never answers (sleeps), but keeps reading nothing;
* ``garbage``   -- writes a line that is not JSON (then the real answer);
* ``wrong-id``  -- answers with another id;
* ``no-ok``     -- answers ``{"id": ..}`` without ``ok``;
* ``bad-kind``  -- answers an error of an unknown kind;
* ``unsupported`` -- answers ``unsupported``;
* ``internal``  -- answers an ``internal`` error;
* ``flood``     -- writes 1 MB to stderr before answering (pipe must be drained);
* ``partial-exit`` -- writes half a response without a newline and exits;
* ``deep``      -- answers with JSON nested 100000 levels deep;
* ``nasty``     -- answers an internal error whose message holds a lone surrogate,
  NUL and other control characters (reports must still be written).

Modes on hello: ``bad-hello`` (hello output without ``ops``), ``die-at-start``
(exits before reading anything), ``silent`` (never answers hello),
``crash-always`` (crashes on every non-hello request: the runner must give up).
"""

import json
import sys
import time

from flk.conformance.ops import handle


def main() -> int:
    mode = sys.argv[1]
    target = sys.argv[2] if len(sys.argv) > 2 else "fmt9"
    if mode == "die-at-start":
        return 4
    for line in sys.stdin:
        req = json.loads(line)
        resp = handle(req)
        op = req.get("op")
        if op == "hello":
            if mode == "silent":
                time.sleep(3600)
            if mode == "bad-hello":
                del resp["output"]["ops"]
        elif mode == "crash-always" or (op == target and mode == "crash"):
            print("adapter: dying on purpose", file=sys.stderr, flush=True)
            return 3
        elif op == target:
            if mode == "hang":
                time.sleep(3600)
            elif mode == "garbage":
                sys.stdout.write("this is not json\n")
            elif mode == "wrong-id":
                resp["id"] = -12345
            elif mode == "no-ok":
                resp = {"id": resp["id"]}
            elif mode == "bad-kind":
                resp = {"id": resp["id"], "ok": False, "error": {"kind": "oops", "message": "?"}}
            elif mode == "unsupported":
                resp = {"id": resp["id"], "ok": False, "error": {"kind": "unsupported", "message": "nope"}}
            elif mode == "internal":
                resp = {"id": resp["id"], "ok": False, "error": {"kind": "internal", "message": "boom"}}
            elif mode == "partial-exit":
                sys.stdout.write('{"id": ')
                sys.stdout.flush()
                return 5
            elif mode == "nasty":
                resp = {"id": resp["id"], "ok": False,
                        "error": {"kind": "internal", "message": "bad \ud800 \x00\x1b\ufffe end"}}
            elif mode == "deep":
                sys.stdout.write("[" * 100000 + "]" * 100000 + "\n")
            elif mode == "flood":
                sys.stderr.write("x" * (1 << 20) + "\n")
                sys.stderr.flush()
        sys.stdout.write(json.dumps(resp) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
