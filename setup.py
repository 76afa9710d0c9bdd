"""Maps the top-level code folders onto the ``flk`` namespace.

``flk.model`` -> ``model/``, ``flk.sim`` -> ``sim/``, ``flk.impl`` -> ``impl/``,
``flk.conformance`` -> ``conformance/``, ``flk.formal`` -> ``formal/``.
Sub-packages are discovered, so a new folder with an ``__init__.py`` needs no edit.
The normative ``spec/`` folder (schemas, vectors, OpenAPI) ships as ``flk.spec`` data.
"""

from setuptools import find_packages, setup

ROOTS = ("model", "sim", "impl", "conformance", "formal", "spec")

packages: list[str] = []
package_dir: dict[str, str] = {}
for root in ROOTS:
    packages.append(f"flk.{root}")
    package_dir[f"flk.{root}"] = root
    for sub in find_packages(root):
        packages.append(f"flk.{root}.{sub}")
        package_dir[f"flk.{root}.{sub}"] = f"{root}/" + sub.replace(".", "/")

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={
        "flk.spec": ["*.json", "*.yaml", "*.md", "vectors/*.json"],
        "flk.impl.verifier": ["*.lark"],
        "flk.sim": ["scenarios/*.toml", "scenarios/regressions/*.toml"],
        "flk.formal": ["manifest.json"],
        "flk.conformance": ["*.md", "*.json", "adapters/node/*"],
    },
    include_package_data=True,
)
