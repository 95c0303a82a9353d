"""forgetless: continual learning in PyTorch — train on a sequence of tasks, measure forgetting, fight it.

The public names below are imported when first used (PEP 562 ``__getattr__``), so ``import
forgetless`` and ``forgetless --help`` do not pay for torch; ``forgetless.run`` is the function
``run.run`` even after the submodule ``forgetless.run`` has been imported.
"""

import importlib
import importlib.util
import sys
import types
from typing import Any

__version__ = "0.2.0"  # the one place of the version: pyproject.toml and `forgetless --version` read it

_WHERE = {  # public name -> the submodule that defines it
    "Benchmark": "benchmarks",
    "Task": "benchmarks",
    "benchmark_names": "benchmarks",
    "build": "benchmarks",
    "RunConfig": "config",
    "UsageError": "errors",
    "evaluate": "loop",
    "train_step": "loop",
    "train_task": "loop",
    "build_model": "models",
    "Result": "results",
    "save_result": "results",
    "run": "run",
    "STRATEGIES": "strategies",
    "Batch": "strategies",
    "Compose": "strategies",
    "Context": "strategies",
    "Param": "strategies",
    "Strategy": "strategies",
    "make_strategy": "strategies",
}

__all__ = [
    "STRATEGIES",
    "Batch",
    "Benchmark",
    "Compose",
    "Context",
    "Param",
    "Result",
    "RunConfig",
    "Strategy",
    "Task",
    "UsageError",
    "benchmark_names",
    "build",
    "build_model",
    "evaluate",
    "make_strategy",
    "metrics",
    "run",
    "save_result",
    "train_step",
    "train_task",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module("." + _WHERE[name], __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module("." + name, __name__)  # a submodule: forgetless.metrics, .models, ...
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The package's module type: its attribute ``run`` stays the function ``run.run`` (importing
    the submodule ``forgetless.run`` would otherwise put the module in its place)."""

    @property
    def run(self) -> Any:
        return self.__dict__.get("_run_override") or importlib.import_module(".run", __name__).run

    @run.setter
    def run(self, value: Any) -> None:  # (the import system sets the submodule here: the function is kept)
        if not isinstance(value, types.ModuleType):
            self.__dict__["_run_override"] = value

    @run.deleter
    def run(self) -> None:
        self.__dict__.pop("_run_override", None)


sys.modules[__name__].__class__ = _Package
