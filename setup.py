"""Maps the top-level code folders onto the ``flk`` namespace.

``flk.model`` -> ``model/``, ``flk.sim`` -> ``sim/``, ``flk.impl`` -> ``impl/``,
``flk.conformance`` -> ``conformance/``, ``flk.formal`` -> ``formal/``.
Sub-packages are discovered, so a new folder with an ``__init__.py`` needs no edit.
The normative ``spec/`` folder (schemas, vectors, OpenAPI) ships as ``flk.spec`` data.

``flk.impl.core._fastcore`` (canonical bytes, fmt9, HMAC) and
``flk.impl.verifier._fastverify`` (JSON, wire rules, steps 4 and 6, the accept
path; it uses the core's through ``impl/core/_fastcore.h``) are the optional
compiled fast paths (C, linked against libcrypto); ``flk.impl.dedup._fastsqlite``
(the SQLite dedup store's batch rows, linked against libsqlite3) is the third and
``flk.sim._fasthistory`` (the simulator's history lines) the fourth.
``flk.impl.core.accel`` is their registry. Without a compiler, Python headers or
the OpenSSL / SQLite headers the build warns and the package installs without
them: the pure Python code is complete on its own (``flk --version`` says which
is active).
"""

import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOTS = ("model", "sim", "impl", "conformance", "formal", "spec")
# folders of data files only (no __init__.py), shipped as data packages so setuptools
# neither warns about them nor drops them
DATA_PACKAGES = {
    "flk.sim.scenarios": ["*.toml"],
    "flk.sim.scenarios.regressions": ["*.toml"],
    "flk.sim.studies": ["*.toml"],
    "flk.spec.vectors": ["*.json"],
    "flk.conformance.adapters.node": ["*.mjs"],
    "flk.conformance.adapters.go": ["*.go"],
    "flk.spec.runbooks": ["*.md"],
}
# the shipped Prometheus rules: flk.sim.alerts and `flk compliance report` read flk/deploy/prometheus
# and flk/spec/runbooks beside the code, as they read deploy/ and spec/ in a checkout (a copy of the
# package folders alone, as some packaging tests build, has no deploy/)
if (Path(__file__).resolve().parent / "deploy" / "prometheus").is_dir():
    DATA_PACKAGES.update({f"flk.deploy.prometheus{sub}": ["*.yml"] for sub in ("", ".rules", ".tests")})

packages: list[str] = []
package_dir: dict[str, str] = {}
for root in ROOTS:
    packages.append(f"flk.{root}")
    package_dir[f"flk.{root}"] = root
    for sub in find_packages(root):
        packages.append(f"flk.{root}.{sub}")
        package_dir[f"flk.{root}.{sub}"] = f"{root}/" + sub.replace(".", "/")
for name in DATA_PACKAGES:
    packages.append(name)
    package_dir[name] = name.removeprefix("flk.").replace(".", "/")



class OptionalBuildExt(build_ext):
    """build_ext that never fails the install: a missing toolchain means the pure-Python core."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any toolchain failure
            self._warn(exc)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001 - compiler, headers or linker missing
            self._warn(exc)

    @staticmethod
    def _warn(exc: Exception) -> None:
        print(
            f"warning: a compiled fast path was not built ({exc}); the pure-Python code is used. "
            "Install gcc, the Python headers, libssl-dev and libsqlite3-dev (make setup does) for the compiled path.",
            file=sys.stderr,
        )


COMPILE_ARGS = ["-O2", "-ffp-contract=off", "-Wall"]
FASTCORE = Extension(
    "flk.impl.core._fastcore",
    sources=["impl/core/_fastcore.c"],
    depends=["impl/core/_fastcore.h", "impl/core/_fastcore_constants.h"],
    libraries=["crypto"],
    extra_compile_args=COMPILE_ARGS,
    optional=True,
)
FASTVERIFY = Extension(
    "flk.impl.verifier._fastverify",
    sources=["impl/verifier/_fastverify.c"],
    depends=["impl/core/_fastcore.h", "impl/verifier/_fastverify_constants.h"],
    libraries=["crypto"],
    extra_compile_args=COMPILE_ARGS,
    optional=True,
)
FASTHISTORY = Extension(  # the simulator's history lines (flk.sim.history.LineSink's twin)
    "flk.sim._fasthistory",
    sources=["sim/_fasthistory.c"],
    extra_compile_args=COMPILE_ARGS,
    optional=True,
)

FASTSQLITE = Extension(
    "flk.impl.dedup._fastsqlite",
    sources=["impl/dedup/_fastsqlite.c"],
    libraries=["sqlite3"],
    extra_compile_args=COMPILE_ARGS,
    optional=True,
)

setup(
    ext_modules=[FASTCORE, FASTVERIFY, FASTSQLITE, FASTHISTORY],
    cmdclass={"build_ext": OptionalBuildExt},
    packages=packages,
    package_dir=package_dir,
    package_data={
        "flk.spec": ["*.json", "*.yaml", "*.md"],
        "flk.impl.verifier": ["*.lark"],
        "flk.sim": ["*.md"],
        "flk.formal": ["manifest.json"],
        "flk.conformance": ["*.md", "*.json"],
        "flk.impl.lab.cluster": ["*.c"],  # ftshim.c: compiled by flk cluster run for its clock faults
        **DATA_PACKAGES,
    },
    include_package_data=True,
)
