"""Strategies by name, and how to make one (or several composed) from a name and parameters."""

from __future__ import annotations

from typing import Any

from ..errors import UsageError, closest
from .base import ALL_SCENARIOS, Batch, Compose, Context, Param, Strategy
from .baselines import Cumulative, Joint, Naive
from .cec import CEC
from .prototype import Prototype
from .registry_isolation import ISOLATION
from .registry_regularization import REGULARIZATION
from .registry_replay import REPLAY
from .topic import Topic

STRATEGIES: dict[str, type[Strategy]] = {
    "naive": Naive,
    "joint": Joint,
    "cumulative": Cumulative,
    **REGULARIZATION,
    **REPLAY,
    "prototype": Prototype,
    "topic": Topic,
    "cec": CEC,
}

STRATEGIES.update(ISOLATION)  # parameter isolation: pnn, packnet, hat (task-IL)


def split_params(names: list[str], params: dict[str, Any]) -> list[dict[str, Any]]:
    """Give each part of ``a+b`` its parameters: ``a.key`` goes to part a; an unprefixed ``key`` goes
    to the one part that declares it (an error when several do, or none)."""
    out: list[dict[str, Any]] = [{} for _ in names]
    spec = "+".join(names)
    for key, value in params.items():
        part, dot, name = key.rpartition(".")
        if dot:
            if part not in names:
                raise UsageError(f"parameter {key!r}: {part!r} is not a part of strategy {spec!r}")
            targets = [names.index(part)]
        else:
            targets = [i for i, n in enumerate(names) if name in STRATEGIES[n].params]
            if len(targets) > 1:
                owners = [names[i] for i in targets]
                raise UsageError(
                    f"parameter {name!r} belongs to {' and '.join(owners)}: write "
                    f"{' or '.join(f'{o}.{name}' for o in owners)}"
                )
        for i in targets:
            if name not in STRATEGIES[names[i]].params:
                declared = {k for n in names for k in STRATEGIES[n].params}
                known = ", ".join(sorted(STRATEGIES[names[i]].params)) or "none"
                raise UsageError(
                    f"unknown parameter {name!r} for strategy {names[i]!r}"
                    f"{closest(name, declared)}; its parameters: {known}"
                )
            out[i][name] = value
        if not targets:
            declared = sorted({k for n in names for k in STRATEGIES[n].params})
            raise UsageError(
                f"unknown parameter {name!r} for strategy {spec!r}{closest(name, declared)}; "
                f"its parameters: {', '.join(declared) or 'none'}"
            )
    return out


def make_strategy(spec: str, params: dict[str, Any] | None = None, scenario: str | None = None) -> Strategy:
    """'ewc' or 'er+ewc' with parameters (``lam`` or, for composed strategies, ``ewc.lam``)."""
    names = [n.strip() for n in spec.split("+") if n.strip()]
    if not names:
        raise UsageError("--strategy is empty; see `forgetless list`")
    for name in names:
        if name not in STRATEGIES:
            raise UsageError(f"unknown strategy {name!r}{closest(name, STRATEGIES)}; see `forgetless list`")
    if len(set(names)) != len(names):
        raise UsageError(f"{spec}: a strategy appears twice; compose different strategies")
    parts = [STRATEGIES[n](**p) for n, p in zip(names, split_params(names, dict(params or {})))]
    strategy = parts[0] if len(parts) == 1 else Compose(parts)
    if scenario is not None and scenario not in strategy.scenarios:
        raise UsageError(
            f"strategy {spec!r} does not support the {scenario}-incremental scenario; "
            f"it supports: {', '.join(strategy.scenarios)}"
        )
    return strategy


__all__ = [
    "ALL_SCENARIOS",
    "STRATEGIES",
    "Batch",
    "Compose",
    "Context",
    "Param",
    "Strategy",
    "make_strategy",
    "split_params",
]
