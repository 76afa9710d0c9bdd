"""Planted C variants: a compiled fast path's source built again with a ``-D`` define that
plants a bug, loaded as a module of its own, for the differential tests that must catch it.

Why this module exists: every compiled extension (``_fastverify``, ``_fastsqlite``,
``_fasthistory``) proves its differential test by planting bugs in its C source; the
compile-and-load steps are the same for all of them. Production code never imports this
module (spec/ARCHITECTURE.md).
"""

from __future__ import annotations

import atexit
import functools
import importlib.machinery
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sysconfig
import tempfile
from types import ModuleType


@functools.cache
def build_variant(source: str, name: str, define: str, libraries: tuple[str, ...] = (),
                  headers: tuple[str, ...] = ()) -> ModuleType | None:
    """``source`` (a C file) compiled with ``-D<define>`` as the extension module ``name`` in a
    directory of its own (removed at exit), loaded; built once per arguments and process.
    None when the machine cannot build it: no C compiler, no ``Python.h``, or one of
    ``headers`` (absolute paths, e.g. ``/usr/include/sqlite3.h``) missing. A build that
    fails otherwise raises ``RuntimeError`` with the compiler's message."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()
    include = sysconfig.get_paths()["include"]
    if shutil.which(cc[0]) is None or not os.path.exists(os.path.join(include, "Python.h")) \
            or not all(os.path.exists(h) for h in headers):
        return None
    out_dir = pathlib.Path(tempfile.mkdtemp(prefix=f"planted-{name}-"))
    atexit.register(shutil.rmtree, out_dir, True)
    target = out_dir / f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}"
    cmd = [*cc, "-shared", "-fPIC", "-O1", "-ffp-contract=off", f"-D{define}", f"-I{include}", source,
           "-o", str(target), *(f"-l{lib}" for lib in libraries)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise RuntimeError(f"building {pathlib.Path(source).name} with -D{define} failed: {done.stderr[-2000:]}")
    loader = importlib.machinery.ExtensionFileLoader(name, str(target))
    spec = importlib.util.spec_from_file_location(name, str(target), loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module
