"""Strategy: the hooks of the one training step, each doing nothing by default.

A method overrides only the hooks it needs (DESIGN.md). ``forgetless.train_step`` drives them, in
the library's loop and in a user's own loop alike; for every task::

    s.before_task(ctx, task)                       # also records the task in ctx (always)
    data, t = s.train_data(ctx, task)              # what this task trains on (joint, exemplars)
    for each batch = Batch(x, y, t) of data:       # t: the task index of every sample
        train_step(ctx, s, batch):
            batch = s.adapt_batch(ctx, batch)      # replay mixes memory in here
            out = model(batch.x)                   # raw logits, every output
            loss = CE(ctx.mask(out, batch.t), batch.y)
            loss = s.task_loss(ctx, batch, out, loss)   # change or reweight the loss (iCaRL, BiC, DGR)
            pen = s.penalty(ctx, batch, out)       # None or a scalar tensor, added to the loss
            backward; s.after_backward(ctx); optimizer step; s.after_step(ctx, batch)
    s.after_task(ctx, task)

and ``s.predict(ctx, x)`` gives the scores used for evaluation (before masking).

Hyperparameters are declared once in ``params`` as ``Param(default, range, help)`` and checked in
one place (``Param.check``) for the CLI and for Python construction alike; learned state lives in
attributes ending with ``_`` and travels through ``state_dict`` / ``load_state_dict``.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias, TypeVar

import torch

from ..errors import UsageError, closest

if TYPE_CHECKING:  # pragma: no cover
    from ..benchmarks import Benchmark, Task
    from ..data.base import TensorData

ALL_SCENARIOS = ("task", "domain", "class")


class Batch(NamedTuple):
    """One mini-batch: inputs, targets (output indices) and each sample's task index."""

    x: torch.Tensor
    y: torch.Tensor
    t: torch.Tensor


# ---- hyperparameters ---------------------------------------------------------------------------
_RANGE = re.compile(r"^\s*([\[(])\s*(-?[\d.e+-]+|-inf)\s*,\s*(-?[\d.e+-]+|inf)\s*([\])])\s*$")
_BOUND = re.compile(r"^\s*(>=|>|<=|<)\s*(-?[\d.e+-]+)\s*$")


@dataclass(frozen=True)
class Param:
    """A hyperparameter: its default, the values it accepts, and what it means.

    ``check``: ``">=0"``, ``">0"``, ``"<=1"``, ``"[0, 1]"``, ``"(0, 1]"`` (numbers), or a tuple of allowed
    names (strings); the type is the default's (an int is accepted for a float). ``optional``: None is
    accepted (e.g. "all samples"). ``needs``: the name of a boolean parameter without which this one
    would be ignored, so setting it while that one is false is an error.
    """

    default: Any
    check: str | tuple[str, ...] = ""
    help: str = ""
    optional: bool = False
    needs: str | None = None

    @property
    def kind(self) -> type:
        """The declared type: the default's type (float when the default is None)."""
        return type(self.default) if self.default is not None else float

    def describe(self) -> str:
        """One line for ``forgetless list``: the help, the accepted values, and "or none" when optional."""
        rng = f"one of {', '.join(self.check)}" if isinstance(self.check, tuple) else self.check
        return ", ".join(x for x in (self.help, rng, "or none" if self.optional else "") if x)

    def validate(self, value: Any, name: str, who: str) -> Any:
        """``value`` converted to the declared type, or a one-line UsageError."""
        where = f"parameter {name!r} of {who!r}"
        if value is None:
            if self.optional or self.default is None:
                return None
            raise UsageError(f"{where} cannot be none")
        kind = self.kind
        if kind is bool:
            if not isinstance(value, bool):
                raise UsageError(f"{where} must be true or false, got {value!r}")
        elif kind in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UsageError(f"{where} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
            if kind is int:
                if not float(value).is_integer():
                    raise UsageError(f"{where} must be an integer, got {value!r}")
                value = int(value)
            else:
                value = float(value)
            self._check_range(value, where)
        elif kind is str:
            if not isinstance(value, str):
                raise UsageError(f"{where} must be a name, got {value!r}")
            if isinstance(self.check, tuple) and value not in self.check:
                raise UsageError(
                    f"{where} must be one of {', '.join(self.check)}, got {value!r}{closest(value, self.check)}"
                )
        return value

    def _check_range(self, value: float, where: str) -> None:
        if not self.check or isinstance(self.check, tuple):
            return
        ok = True
        for part in self.check.split("&"):
            m = _BOUND.match(part)
            if m:
                op, bound = m.group(1), float(m.group(2))
                ok &= {">=": value >= bound, ">": value > bound, "<=": value <= bound, "<": value < bound}[op]
                continue
            m = _RANGE.match(part)
            if not m:
                raise ValueError(f"bad range {self.check!r} in the declaration of {where}")
            lo, hi = float(m.group(2)), float(m.group(3))
            above = value >= lo if m.group(1) == "[" else value > lo
            below = value <= hi if m.group(4) == "]" else value < hi
            ok &= above and below
        if not ok:
            raise UsageError(f"{where} must be {self.check}, got {value!r}")


_BeforeTask: TypeAlias = "Callable[[Strategy, Context, Task], None]"
_Hook = TypeVar("_Hook", bound=Callable[..., object])


def _mark_recording(hook: _Hook) -> _Hook:
    """Mark ``hook`` as a before_task that records the task in the context (not to be wrapped again)."""
    hook.__dict__["_records_task"] = True  # (a function attribute: the typed spelling of hook._records_task)
    return hook


def _entering(hook: _BeforeTask) -> _BeforeTask:
    """Wrap a subclass's before_task so the context always learns the task first."""

    @functools.wraps(hook)
    def before_task(self: Strategy, ctx: Context, task: Task) -> None:
        ctx.begin_task(task, self.trains_upto(ctx, task))
        return hook(self, ctx, task)

    return _mark_recording(before_task)


# ---- context -----------------------------------------------------------------------------------
@dataclass
class Context:
    """What the hooks may read: the model, the optimizer, the benchmark and where training is."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    benchmark: Benchmark
    task_id: int = 0  # the task being trained (set by before_task)
    epoch: int = 0  # the epoch within the task (the library's loop sets it; informative only)
    step: int = 0  # optimizer steps in the current task
    global_step: int = 0  # optimizer steps since the start of the run
    seen_upto: int = -1  # the highest task index whose data the model has trained on (class-IL masks)
    batch_size: int = 128
    precision: str = "float32"  # bf16 / fp16: forward passes, losses and evaluation under autocast (devices.py)
    generator: torch.Generator = field(default_factory=torch.Generator)  # on the CPU: seeded choices
    device: torch.device | None = None  # where everything lives; None: the model's device
    scaler: Any = None  # torch.amp.GradScaler for fp16, else None
    augment: Any = None  # a callable x -> x applied to every training batch after adapt_batch, or None
    seen_labels: torch.Tensor | None = None  # blurry streams: bool [n_outputs], the labels trained on so far

    def __post_init__(self) -> None:
        from ..models import adapt_model

        self.model = adapt_model(self.model)  # a Keras 3 model -> its nn.Module view (forgetless.keras)
        if self.device is None:
            first = next(iter(self.model.parameters()), None)
            self.device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(self.device)

    def put(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (e.g. indices drawn on the CPU with ``generator``) on the run's device, without a sync."""
        from ..devices import put

        assert self.device is not None  # __post_init__ set it
        return put(t, self.device)

    def begin_task(self, task: Task, upto: int | None = None) -> None:
        """Record that ``task`` starts (its data, and data of tasks up to ``upto``, will be trained on)."""
        self.task_id, self.step = task.id, 0
        self.seen_upto = max(self.seen_upto, task.id if upto is None else upto)

    def mask(self, logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Logits with the training mask of the scenario (task-IL: each sample's own task ``t``;
        class-IL: every class seen so far; domain-IL: none). In a blurry stream (``seen_labels``) the
        labels already trained on compete too, also those of later tasks."""
        out = self.benchmark.mask_logits(logits, t, self.seen_upto)
        if self.seen_labels is not None:
            out = torch.where(self.seen_labels, logits, out)
        return out

    def params(self) -> list[torch.nn.Parameter]:
        """The model's trainable parameters (those with ``requires_grad``), in the model's order."""
        return [p for p in self.model.parameters() if p.requires_grad]


# ---- strategies --------------------------------------------------------------------------------
class Strategy:
    """Naive fine-tuning: every hook does nothing. Subclasses declare ``name`` and ``params``."""

    name = "naive"
    family = "baseline"  # baseline | regularization | distillation | replay | isolation | fscil
    params: dict[str, Param] = {}
    scenarios: tuple[str, ...] = ALL_SCENARIOS
    task_free = False  # True: works without being told where tasks start and end (--task-free)
    help = "fine-tuning: train on each task in turn, nothing against forgetting (lower bound)"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "params" in cls.__dict__:  # a plain default is a Param with no range (a user's quick strategy)
            cls.params = {k: v if isinstance(v, Param) else Param(v) for k, v in cls.params.items()}
        hook = cls.__dict__.get("before_task")
        if hook is not None and not getattr(hook, "_records_task", False):
            setattr(cls, "before_task", _entering(hook))  # noqa: B010 (mypy refuses `cls.method = ...`)

    def __init__(self, **kwargs: Any):
        unknown = set(kwargs) - set(self.params)
        if unknown:
            key = sorted(unknown)[0]
            known = ", ".join(sorted(self.params)) or "none"
            raise UsageError(
                f"unknown parameter {key!r} for strategy {self.name!r}"
                f"{closest(key, self.params)}; its parameters: {known}"
            )
        for key, decl in self.params.items():
            value = kwargs.get(key, decl.default)
            setattr(self, key, decl.validate(value, key, self.name))
        for key in kwargs:
            needs = self.params[key].needs
            if needs is not None and not getattr(self, needs):
                raise UsageError(
                    f"parameter {key!r} of {self.name!r} has no effect without {needs}=true; "
                    f"set {needs}=true or drop {key}"
                )

    def hparams(self) -> dict[str, Any]:
        """The declared hyperparameters and their current values: {"lam": 100.0, ...}."""
        return {key: getattr(self, key) for key in self.params}

    def spec(self) -> str:
        """What this strategy is, as recorded in a run's config: its registered name, or
        ``custom:ClassName`` for a class that is not one of forgetless's."""
        from . import STRATEGIES

        return self.name if STRATEGIES.get(self.name) is type(self) else f"custom:{type(self).__name__}"

    def trains_upto(self, ctx: Context, task: Task) -> int:
        """The last task whose data ``train_data`` brings at ``task`` (only joint looks ahead)."""
        return task.id

    # ---- hooks ------------------------------------------------------------------------------
    @_mark_recording
    def before_task(self, ctx: Context, task: Task) -> None:
        """Called once before ``task`` is trained (records it in ``ctx``; LwF, iCaRL, BiC keep the old model here)."""
        ctx.begin_task(task, self.trains_upto(ctx, task))

    def train_data(self, ctx: Context, task: Task) -> tuple[TensorData, torch.Tensor] | None:
        """(data, task index of every sample) to train on for ``task``; None to skip training."""
        return task.train, task.ids()

    def adapt_batch(self, ctx: Context, batch: Batch) -> Batch:
        """The batch to train on, given the one drawn from the task (replay methods mix memory into it)."""
        return batch

    def task_loss(self, ctx: Context, batch: Batch, out: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        """The loss to use, given the loop's masked cross-entropy ``loss`` (iCaRL, BiC, DGR change it)."""
        return loss

    def penalty(self, ctx: Context, batch: Batch, out: torch.Tensor) -> torch.Tensor | None:
        """A scalar added to the loss before backward (regularization, distillation), or None."""
        return None

    def after_backward(self, ctx: Context) -> None:
        """Called after backward, before the optimizer step: gradients may be changed here (GEM, A-GEM)."""

    def after_step(self, ctx: Context, batch: Batch) -> None:
        """Called after every optimizer step (SI and RWalk accumulate their path integral, online buffers fill)."""

    def after_task(self, ctx: Context, task: Task) -> None:
        """Called once after ``task`` is trained (importances, anchors, memory updates, BiC's bias stage)."""

    def predict(self, ctx: Context, x: torch.Tensor) -> torch.Tensor:
        """The scores used for evaluation (default: the model's logits; iCaRL predicts by nearest mean)."""
        scores: torch.Tensor = ctx.model(x)  # (Module.__call__ is typed as returning Any)
        return scores

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Learned state: every attribute whose name ends with ``_``."""
        return {k: v for k, v in vars(self).items() if k.endswith("_")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the learned state saved by ``state_dict`` (the attributes ending with ``_``)."""
        for key, value in state.items():
            setattr(self, key, value)


def _overrides(st: Strategy, hook: str) -> bool:
    return getattr(type(st), hook) is not getattr(Strategy, hook)


class Compose(Strategy):
    """Several strategies at once: hooks run in order, losses pass through each part's task_loss,
    penalties add up. At most one part may replace ``train_data`` and at most one ``predict``."""

    name = "compose"

    def __init__(self, strategies: list[Strategy]):
        self.strategies = list(strategies)
        if len(self.strategies) < 2:
            raise UsageError("Compose needs at least two strategies")
        names = [st.name for st in self.strategies]
        if len(set(names)) != len(names):
            raise UsageError(f"{'+'.join(names)}: a strategy appears twice; compose different strategies")
        for hook in ("train_data", "predict"):
            owners = [st.name for st in self.strategies if _overrides(st, hook)]
            if len(owners) > 1:
                raise UsageError(f"{owners[0]} and {owners[1]} both replace {hook}: they cannot be composed")
        isolated = [st.name for st in self.strategies if st.family == "isolation"]
        feeding = [st.name for st in self.strategies if st.family in ("replay", "distillation")]
        if isolated and feeding:
            raise UsageError(
                f"{isolated[0]} runs every batch through the current task's own parameters, so "
                f"{feeding[0]}'s examples or outputs of earlier tasks would pass through the wrong "
                f"task's; use {isolated[0]} alone (it does not forget in task-IL)"
            )
        self.scenarios = tuple(s for s in ALL_SCENARIOS if all(s in st.scenarios for st in self.strategies))
        self.task_free = all(getattr(st, "task_free", False) for st in self.strategies)

    def hparams(self) -> dict[str, Any]:
        """Every part's values, prefixed with its name: {"ewc.lam": 100.0, "lwf.lam": 1.0, ...}."""
        return {f"{st.name}.{k}": v for st in self.strategies for k, v in st.hparams().items()}

    def spec(self) -> str:
        return "+".join(st.spec() for st in self.strategies)

    def _one(self, hook: str) -> Strategy | None:
        return next((st for st in self.strategies if _overrides(st, hook)), None)

    def trains_upto(self, ctx: Context, task: Task) -> int:
        return max(st.trains_upto(ctx, task) for st in self.strategies)

    def before_task(self, ctx: Context, task: Task) -> None:
        for st in self.strategies:
            st.before_task(ctx, task)

    def train_data(self, ctx: Context, task: Task) -> tuple[TensorData, torch.Tensor] | None:
        owner = self._one("train_data")
        return owner.train_data(ctx, task) if owner else super().train_data(ctx, task)

    def adapt_batch(self, ctx: Context, batch: Batch) -> Batch:
        for st in self.strategies:
            batch = st.adapt_batch(ctx, batch)
        return batch

    def task_loss(self, ctx: Context, batch: Batch, out: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        for st in self.strategies:
            loss = st.task_loss(ctx, batch, out, loss)
        return loss

    def penalty(self, ctx: Context, batch: Batch, out: torch.Tensor) -> torch.Tensor | None:
        total: torch.Tensor | None = None
        for st in self.strategies:
            p = st.penalty(ctx, batch, out)
            if p is not None:
                total = p if total is None else total + p
        return total

    def after_backward(self, ctx: Context) -> None:
        for st in self.strategies:
            st.after_backward(ctx)

    def after_step(self, ctx: Context, batch: Batch) -> None:
        for st in self.strategies:
            st.after_step(ctx, batch)

    def after_task(self, ctx: Context, task: Task) -> None:
        for st in self.strategies:
            st.after_task(ctx, task)

    def predict(self, ctx: Context, x: torch.Tensor) -> torch.Tensor:
        owner = self._one("predict")
        if owner:
            return owner.predict(ctx, x)
        scores: torch.Tensor = ctx.model(x)
        return scores

    def state_dict(self) -> dict[str, Any]:
        return {str(i): st.state_dict() for i, st in enumerate(self.strategies)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, st in enumerate(self.strategies):
            st.load_state_dict(state[str(i)])
