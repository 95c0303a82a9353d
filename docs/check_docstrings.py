"""Fail when a public name of forgetless has no docstring (run by docs/build.py before the site is built).

mkdocstrings renders what it finds and says nothing about what is missing, so this walks the public
surface itself:

- every public module of the package (no part of its dotted name starts with ``_``; ``__main__`` and
  the Keras modules are skipped when keras is not installed) must have a module docstring;
- every name in ``forgetless.__all__`` and in each public module's ``__all__`` must have a docstring
  of its own (a class's or function's, not one inherited from ``object`` or a builtin), and so must
  the public methods of the classes in ``forgetless.__all__`` (an override of a documented method
  keeps its base's meaning and passes);
- a module without ``__all__``: every public class and function it defines itself.

Constants (dicts, tuples, numbers) have no docstring in Python and are not checked.

Usage: ``python docs/check_docstrings.py`` — prints one line per missing docstring, exits 1 if any.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import sys
from types import ModuleType


def public_modules(package: str = "forgetless") -> list[ModuleType]:
    os.environ.setdefault("KERAS_BACKEND", "torch")  # forgetless.keras imports keras; torch is always here
    root = importlib.import_module(package)
    out = [root]
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts[1:]) or info.name == "forgetless.cli":
            continue  # (the command line is documented by its --help, not by an API)
        try:
            out.append(importlib.import_module(info.name))
        except Exception as e:  # an optional dependency (keras) that is not installed
            if "keras" in info.name:
                continue
            raise RuntimeError(f"cannot import {info.name}: {e}") from e
    return out


def _own_doc(obj) -> str | None:
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    if not isinstance(doc, str) or not doc.strip():
        return None
    if inspect.isclass(obj) and doc.startswith(obj.__name__ + "("):
        return None  # the signature that @dataclass writes when the class has no docstring
    return doc.strip()


def _documentable(obj) -> bool:
    return inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj)


def missing(modules: list[ModuleType]) -> list[str]:
    problems: list[str] = []
    seen: set[int] = set()

    def check_class(cls, where: str) -> None:
        for name, member in vars(cls).items():
            if name.startswith("_"):
                continue
            fn = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
            if not inspect.isfunction(fn) and not isinstance(member, property):
                continue
            if fn.__doc__ is None or not fn.__doc__.strip():
                # an override of a documented base-class method inherits its meaning
                if any(getattr(getattr(b, name, None), "__doc__", None) for b in cls.__mro__[1:]):
                    continue
                problems.append(f"{where}.{name}: no docstring")

    def check(obj, where: str) -> None:
        if not _documentable(obj) or id(obj) in seen:
            return
        seen.add(id(obj))
        if _own_doc(obj) is None:
            problems.append(f"{where}: no docstring")
        if inspect.isclass(obj) and where.count(".") == 1:  # classes of forgetless.__all__: their methods too
            check_class(obj, where)

    for mod in modules:
        if _own_doc(mod) is None:
            problems.append(f"{mod.__name__}: module has no docstring")
        names = getattr(mod, "__all__", None)
        if names is None:  # no __all__: the public classes and functions the module defines itself
            names = [
                n
                for n, v in vars(mod).items()
                if not n.startswith("_")
                and _documentable(v)
                and not inspect.ismodule(v)
                and getattr(v, "__module__", None) == mod.__name__
            ]
        for n in names:
            if not hasattr(mod, n):
                problems.append(f"{mod.__name__}.__all__ names {n!r}, which does not exist")
                continue
            check(getattr(mod, n), f"{mod.__name__}.{n}")
    return problems


def main() -> int:
    problems = missing(public_modules())
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} public name(s) without a docstring: add one (the API reference is built from them)")
        return 1
    print("docstrings: every public name has one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
