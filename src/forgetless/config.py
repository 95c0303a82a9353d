"""An experiment's configuration as a dataclass: read at the edge, saved with every result."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .errors import UsageError, closest
from .models import DEFAULT_MODEL

OPTIMIZERS = ("sgd", "adam")


PRECISIONS = ("float32", "bf16", "fp16")
# options that say where and how a run computes, not what it computes: not in a run's name, and a
# run may resume with other values (a checkpoint made on a GPU resumes on a CPU)
PLACEMENT = ("device", "compile")


@dataclass
class RunConfig:
    """Every option of a run (the command line's ``forgetless run`` options, one field each), saved
    with its result; ``resolved()`` fills the defaults that depend on other options and checks values."""

    benchmark: str = "permuted-digits"
    scenario: str | None = None  # None: domain for permuted/rotated, class for split, task otherwise
    tasks: int | None = None  # None: the benchmark's default
    strategy: str = "naive"  # several compose with '+', e.g. "er+ewc"
    params: dict[str, Any] = field(default_factory=dict)
    model: str = DEFAULT_MODEL
    epochs: int = 3
    iterations: int | None = None  # optimizer steps per task; replaces epochs when given
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 0.001
    momentum: float = 0.0
    reset_optimizer: bool = False  # a new optimizer (fresh state) at every task
    seed: int = 0
    classes: str | None = None  # split groups, "0,2,4,6,8|1,3,5,7,9"
    first_unpermuted: bool = False
    angles: list[float] | None = None
    val_fraction: float = 0.0
    eval_every: int = 0  # evaluate every N steps for curves (0: only after each task)
    eval_split: str = "test"  # "val": evaluate on the held-out validation data; the test split is never read
    data_dir: str | dict[str, str] | None = None  # a directory, or {dataset: directory}
    download: bool = True
    # bf16 / fp16: autocast of the forward passes (training and evaluation); fp16 adds a GradScaler
    precision: str = "float32"
    device: str = "auto"  # auto (CUDA when present, else CPU), cpu, cuda, cuda:N, mps (devices.py)
    compile: bool = False  # torch.compile the model
    first_tasks: int | None = None  # train and evaluate only the first K tasks (the benchmark is built whole)
    # image protocols (augment.py, models/normalize.py, schedules.py); the defaults keep earlier runs' behaviour
    augment: str = "auto"  # auto | none | crop-flip (auto: crop-flip for CIFAR, none otherwise)
    normalize: str = "auto"  # auto | on | off: the dataset's mean/std as the model's first layer (auto: ResNets only)
    lr_schedule: str = "none"  # none | milestones | cosine, per task (restarting at every task)
    milestones: list[int] | None = None  # epochs (or steps with iterations) where the rate is multiplied by lr_decay
    lr_decay: float | None = None  # the factor at every milestone (None: 0.1); milestones only
    weight_decay: float = 0.0  # L2 weight decay of SGD and Adam (torch's weight_decay: added to the gradient)
    # few-shot class-incremental learning (scenario fscil, benchmarks.py): B base classes, then N-way K-shot sessions
    base_classes: int | None = None
    ways: int | None = None
    shots: int | None = None
    sessions: int | None = None  # None: as many as the remaining classes allow (session 1 is the base session)
    session_lists: str | None = None  # a folder of session_k.txt index lists (the standard fixed sessions)
    # streams (issue 15): one pass with evaluation during it; no task boundaries for the strategy; blurry tasks
    online: bool = False  # one pass over each task's data (epochs = 1), evaluated every eval_every steps
    task_free: bool = False  # the strategy is not told where tasks start and end
    blurry: float = 0.0  # i-Blurry: percent M of each blurry class's training samples moved to other tasks
    blurry_disjoint: float = 50.0  # percent N of the classes that stay disjoint (in their own task only)

    def resolved(self) -> RunConfig:
        """A copy with defaults that depend on other options filled in, and values checked."""
        c = RunConfig(**{f.name: getattr(self, f.name) for f in fields(self)})
        _check_types(c)
        c.params = dict(self.params)
        if c.scenario is None:
            kind = c.benchmark.partition("-")[0]
            c.scenario = {"permuted": "domain", "rotated": "domain", "split": "class"}.get(kind, "task")
        if c.optimizer not in OPTIMIZERS:
            raise UsageError(
                f"unknown optimizer {c.optimizer!r}{closest(c.optimizer, OPTIMIZERS)}; "
                f"choose one of: {', '.join(OPTIMIZERS)}"
            )
        for name, low in (("epochs", 1), ("batch_size", 1), ("iterations", 1), ("eval_every", 0), ("first_tasks", 1)):
            value = getattr(c, name)
            if value is not None and (not isinstance(value, int) or value < low):
                raise UsageError(f"--{name.replace('_', '-')} must be an integer >= {low}, got {value!r}")
        if c.eval_split not in ("test", "val"):
            raise UsageError(f"eval_split must be 'test' or 'val', got {c.eval_split!r}")
        if c.eval_split == "val" and not c.val_fraction > 0:
            raise UsageError("evaluating on validation data needs --val-fraction > 0")
        if c.precision not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {c.precision!r}")
        if not isinstance(c.device, str) or not c.device.strip():
            raise UsageError(f"--device must be a device name (auto, cpu, cuda, cuda:N, mps), got {c.device!r}")
        if not isinstance(c.compile, bool):
            raise UsageError(f"compile must be true or false, got {c.compile!r}")
        if not c.lr > 0:
            raise UsageError(f"--lr must be positive, got {c.lr}")
        _check_specs(c)
        _check_image_options(c)
        _check_stream_options(c)
        return c

    def to_dict(self) -> dict[str, Any]:
        """Every field as a plain dict (what result.json records under ``config``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """A RunConfig from a dict such as ``to_dict``'s; unknown keys are a UsageError."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UsageError(f"unknown option {unknown[0]!r}{closest(unknown[0], names)}")
        return cls(**data)

    def stamp(self) -> str:
        """A stable, readable name for this run: the main options and a hash of all of them."""
        c = self
        parts = [c.benchmark, c.scenario or "auto", f"t{c.tasks or 'def'}", c.strategy]
        parts += [f"{k}={v}" for k, v in sorted(c.params.items())]
        parts += [
            c.model.replace(":", "").replace(",", "-"),
            f"i{c.iterations}" if c.iterations else f"e{c.epochs}",
            f"b{c.batch_size}",
            f"{c.optimizer}{c.lr:g}",
            f"s{c.seed}",
        ]
        d = self.to_dict()
        for name in PLACEMENT:
            del d[name]
        if d["precision"] == "float32":  # (runs stamped before the option existed keep their names)
            del d["precision"]
        else:
            parts.append(d["precision"])
        if d["first_tasks"] is None:  # (likewise)
            del d["first_tasks"]
        else:
            parts.append(f"first{d['first_tasks']}")
        for key in FSCIL_OPTIONS:  # (likewise)
            if d[key] is None:
                del d[key]
            else:
                # (session_lists is a path: in the hash only)
                parts.append(FSCIL_OPTIONS[key] + ("" if key == "session_lists" else str(d[key])))
        for key, default in IMAGE_DEFAULTS.items():  # (likewise: only what differs from the default is named)
            if d[key] == default:
                del d[key]
            elif key != "lr_decay":
                value = d[key]
                parts.append(f"{IMAGE_ABBREV[key]}{','.join(map(str, value)) if isinstance(value, list) else value}")
        for key, default in STREAM_DEFAULTS.items():  # (likewise)
            if d[key] == default:
                del d[key]
            elif key != "blurry_disjoint" or d.get("blurry"):
                parts.append(STREAM_ABBREV[key] + ("" if isinstance(d[key], bool) else f"{d[key]:g}"))
        digest = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]
        return "_".join(str(p) for p in parts) + "_" + digest


FSCIL_OPTIONS = {"base_classes": "base", "ways": "way", "shots": "shot", "sessions": "ses", "session_lists": "lists"}
STREAM_DEFAULTS = {"online": False, "task_free": False, "blurry": 0.0, "blurry_disjoint": 50.0}
STREAM_ABBREV = {"online": "online", "task_free": "taskfree", "blurry": "blurry", "blurry_disjoint": "disj"}
ONLINE_EVAL_SAMPLES = 1000  # --online without --eval-every: evaluate about every 1,000 training samples
IMAGE_DEFAULTS = {
    "augment": "auto",
    "normalize": "auto",
    "lr_schedule": "none",
    "milestones": None,
    "lr_decay": None,
    "weight_decay": 0.0,
}
IMAGE_ABBREV = {"augment": "aug-", "normalize": "norm-", "lr_schedule": "", "milestones": "ms", "weight_decay": "wd"}


def _check_image_options(c: RunConfig) -> None:
    """augment, normalize, the learning-rate schedule and weight decay (one-line errors); milestones
    given as text (``"35,45"``) become a list."""
    import math

    from .augment import AUGMENTS
    from .models import NORMALIZE_CHOICES
    from .schedules import SCHEDULES, parse_milestones

    if c.augment not in AUGMENTS:
        raise UsageError(f"--augment must be one of {', '.join(AUGMENTS)}, got {c.augment!r}")
    if c.normalize not in NORMALIZE_CHOICES:
        raise UsageError(f"--normalize must be one of {', '.join(NORMALIZE_CHOICES)}, got {c.normalize!r}")
    if c.lr_schedule not in SCHEDULES:
        raise UsageError(
            f"--lr-schedule must be one of {', '.join(SCHEDULES)}, got {c.lr_schedule!r}"
            f"{closest(str(c.lr_schedule), SCHEDULES)}"
        )
    c.milestones = parse_milestones(c.milestones)
    if c.lr_schedule == "milestones":
        if c.milestones is None:
            raise UsageError("--lr-schedule milestones needs --milestones, e.g. --milestones 35,45")
        length, unit = (c.iterations, "iterations") if c.iterations else (c.epochs, "epochs")
        if c.milestones[-1] >= length:
            raise UsageError(
                f"milestone {c.milestones[-1]} is not within a task's {length} {unit} (milestones "
                f"count {unit} from 0): it would never apply; choose milestones below {length}"
            )
    elif c.milestones is not None:
        raise UsageError(f"--milestones apply to --lr-schedule milestones only (the schedule is {c.lr_schedule})")
    if c.lr_decay is not None:
        if c.lr_schedule != "milestones":
            raise UsageError(f"--lr-decay applies to --lr-schedule milestones only (the schedule is {c.lr_schedule})")
        if isinstance(c.lr_decay, bool) or not isinstance(c.lr_decay, (int, float)) or not 0 < c.lr_decay < 1:
            raise UsageError(f"--lr-decay must be a number in (0, 1), got {c.lr_decay!r}")
        c.lr_decay = float(c.lr_decay)
    wd = c.weight_decay
    if isinstance(wd, bool) or not isinstance(wd, (int, float)) or not math.isfinite(wd) or wd < 0:
        raise UsageError(f"--weight-decay must be a number >= 0, got {wd!r}")
    c.weight_decay = float(wd)


def parse_value(text: str, what: str = "value") -> Any:
    """'10' -> 10, '0.5' -> 0.5, 'true' -> True, 'none' -> None, other words stay strings; strict
    (``spec.parse_value``): '1e', '=3', '' or ' 3' are one-line errors."""
    from .spec import parse_value as strict

    return strict(text, what)


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """['lam=10', 'fisher=exact'] -> {'lam': 10, 'fisher': 'exact'} (``spec.parse_param``: strict keys
    and values; a key given twice is an error, not the last one winning)."""
    from .spec import parse_param

    out: dict[str, Any] = {}
    for item in items or []:
        key, value = parse_param(item)
        if key in out and out[key] != value:
            raise UsageError(f"--param {key} is given twice ({out[key]!r} and {value!r}); give it once")
        out[key] = value
    return out


_TYPES = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "None": (type(None),),
    "list": (list, tuple),
    "dict": (dict,),
}
_TEXT_TOO = ("classes", "angles", "milestones")  # lists that may also be written as text ("0,45,90")


def _check_types(c: RunConfig) -> None:
    """Every option has the type its field declares (a grid file may hold anything): one-line errors."""
    for f in fields(c):
        value = getattr(c, f.name)
        kinds = [k.strip().split("[")[0] for k in str(f.type).split("|")]
        allowed = tuple(t for k in kinds for t in _TYPES.get(k, (object,)))
        if f.name in _TEXT_TOO:
            allowed += (str,)
        ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
        if not ok:
            want = " or ".join(
                {
                    "str": "text",
                    "int": "an integer",
                    "float": "a number",
                    "bool": "true or false",
                    "None": "empty",
                    "list": "a list",
                    "dict": "a table",
                }.get(k, k)
                for k in kinds
            )
            raise UsageError(f"option {f.name!r} must be {want}, got {value!r}")


def _check_specs(c: RunConfig) -> None:
    """The spec strings (strategy, model, classes, angles, data_dir, params): one strict grammar each
    (spec.py), for the CLI, grid files and Python alike."""
    from . import spec

    if not (isinstance(c.strategy, str) and c.strategy.startswith("custom:")):
        spec.parse_strategy(c.strategy)
    spec.parse_model(c.model)
    if c.classes is not None:
        if isinstance(c.classes, str):
            spec.parse_classes(c.classes)
        elif not (
            isinstance(c.classes, (list, tuple))
            and all(
                isinstance(g, (list, tuple)) and g and all(isinstance(v, int) and not isinstance(v, bool) for v in g)
                for g in c.classes
            )
        ):
            raise UsageError(f'classes {c.classes!r}: write groups like "0,2,4|1,3,5" (or lists of integers)')
    if c.angles is not None:
        c.angles = spec.parse_angles(c.angles)
    c.data_dir = spec.parse_data_dir(c.data_dir)
    if not isinstance(c.params, dict):
        raise UsageError(f"params must be a table of KEY = VALUE, got {c.params!r}")
    for key, value in c.params.items():
        spec.check_param_key(key, "parameter")
        spec.check_param_value(key, value)


def _check_stream_options(c: RunConfig) -> None:
    """--online, --task-free, --blurry (one-line errors); --online fixes one pass and, without
    --eval-every, evaluates about every ``ONLINE_EVAL_SAMPLES`` training samples."""
    import math

    for name in ("online", "task_free"):
        if not isinstance(getattr(c, name), bool):
            raise UsageError(f"{name} must be true or false, got {getattr(c, name)!r}")
    for name, lo, hi in (("blurry", 0.0, 100.0), ("blurry_disjoint", 0.0, 100.0)):
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v < hi + (name == "blurry_disjoint"):
            raise UsageError(
                f"--{name.replace('_', '-')} must be a percentage in [0, 100"
                f"{']' if name == 'blurry_disjoint' else ')'}, got {v!r}"
            )
        setattr(c, name, float(v))
    if c.online:
        if c.iterations is not None:
            raise UsageError("--online makes one pass over each task's data; drop --iterations")
        c.epochs = 1
        if not c.eval_every:
            c.eval_every = max(1, math.ceil(ONLINE_EVAL_SAMPLES / c.batch_size))
    if c.task_free and c.reset_optimizer:
        raise UsageError(
            "--task-free: the run is not told where tasks start, so it cannot reset the optimizer "
            "there; drop --reset-optimizer"
        )
    if c.blurry_disjoint != 50.0 and not c.blurry:
        raise UsageError("--blurry-disjoint applies to blurry streams; give --blurry M too")
