"""Execute copies of the notebooks (with their outputs) into runs/notebooks/ for browsing.

The stored notebooks in notebooks/ stay output-free (tests/notebooks enforces that), so a
reader who wants to see the figures and tables without starting Jupyter opens the executed
copies this writes. Each notebook runs with the repository root as its working directory,
like the notebook tests do; a notebook that fails still gets its partial copy written and
the script exits 1 naming it.

    make notebooks-executed        # or: .venv/bin/python scripts/execute_notebooks.py [NAME ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]


def execute(source: Path, out_dir: Path, timeout: int) -> str | None:
    """Run one notebook into ``out_dir``; returns None, or the reason it failed."""
    notebook = nbformat.read(source, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}})
    problem = None
    try:
        client.execute()
    except CellExecutionError as exc:
        problem = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    nbformat.write(notebook, out_dir / source.name)
    return problem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook file names or stems (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "notebooks", help="output folder")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell (default 900)")
    args = parser.parse_args(argv)
    sources = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if args.names:
        sources = [s for s in sources if s.name in args.names or s.stem in args.names]
        if not sources:
            print(f"execute_notebooks: no notebook matches {args.names} in {ROOT / 'notebooks'}", file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for source in sources:
        print(f"executing {source.name} ...", file=sys.stderr, flush=True)
        problem = execute(source, args.out, args.timeout)
        if problem:
            failed.append(source.name)
            print(f"  {source.name} failed: {problem}", file=sys.stderr)
    print(f"executed notebooks written to {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
