"""Every exception class of flk survives pickling: a worker process's error reaches its pool.

An exception whose ``__init__`` takes other arguments than its message cannot be unpickled by
default (pickle calls the class with ``self.args``); ``concurrent.futures`` then reports the pool
as broken ("a process in the process pool was terminated abruptly") instead of the error --
``flk sim sweep --seeds 99999999999999999999999`` gave that traceback where a single run gives
one line. Each class with its own ``__init__`` defines ``__reduce__``; this test finds them all
(every module of the package imported) and round-trips one instance of each.
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
import pickle

import pytest

from flk.impl.governance.auditchain import Problem
from flk.impl.router.wire import Rejection

ROOT = pathlib.Path(__file__).resolve().parents[2]
FOLDERS = ("impl", "sim", "model", "formal", "conformance")

# arguments by parameter name, for the classes that take objects rather than text and numbers
SAMPLES = {
    "problem": Problem("broken-link", 2, 5, 17, "hash mismatch"),
    "rejection": Rejection(502, "bad answer"),
    "problems": ["digest mismatch", "short segment"],
    "offset": 4096,
    "retry_after": 7,
    "line": 3,
    "column": 9,
}


def _modules() -> list[str]:
    names = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if "__pycache__" in rel.parts or "examples" in rel.parts or path.name == "__main__.py":
                continue
            names.append("flk." + ".".join(rel.with_suffix("").parts).removesuffix(".__init__"))
    return names


def exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__.startswith("flk."):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


def _instance(cls: type[BaseException]) -> BaseException:
    own = next((b for b in cls.__mro__ if b.__module__.startswith("flk.") and "__init__" in vars(b)), None)
    if own is None:
        return cls("a message")
    params = list(inspect.signature(own.__init__).parameters.values())[1:]
    args = [SAMPLES.get(p.name, f"<{p.name}>") for p in params if p.default is inspect.Parameter.empty]
    return cls(*args)


CLASSES = exception_classes()


def test_the_walk_finds_the_exception_classes():
    names = {c.__name__ for c in CLASSES}
    assert len(CLASSES) > 30 and {"InvalidInput", "ScenarioError", "WalCorruption", "BreakerOpen"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=[f"{c.__module__}.{c.__qualname__}" for c in CLASSES])
def test_an_instance_survives_pickling(cls):
    exc = _instance(cls)
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls and str(back) == str(exc) and back.args == exc.args
    assert {k: v for k, v in vars(back).items()} == {k: v for k, v in vars(exc).items()}
