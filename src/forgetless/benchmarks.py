"""Benchmarks: a sequence of tasks over a real dataset, and the scenario that maps their labels.

Builders (van de Ven, van de Ven & Tolias 2020 "Three types of incremental learning" for the scenarios):

- ``permuted-<data>``: every task applies its own fixed random pixel permutation (option: task 1
  unpermuted); all tasks share the labels 0..9.
- ``rotated-<data>``: every task rotates the images by its own angle.
- ``split-<data>``: the classes are split into groups, one group per task (``classes_per_task`` or
  explicit ``groups`` such as ``[[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]``).
- ``<data>-<data>``: a sequence of datasets, one per task (``mnist-fashion-mnist``).

Scenarios map each task's labels onto the model's outputs:

- ``task`` (task-IL): the task identity is given; only the task's classes compete (a multi-headed
  output: tasks that share labels get separate output blocks).
- ``domain`` (domain-IL): every task's labels map onto one shared set of outputs (the position of
  the label within its task: split MNIST 0/1, 2/3, ... -> 0/1).
- ``class`` (class-IL): one head over every class; training on task k competes over every class
  seen so far (tasks 1..k); tasks that share labels get separate output blocks.

- ``fscil`` (few-shot class-IL, Tao et al. 2020 "Few-Shot Class-Incremental Learning"), split
  benchmarks only: session 1 = all training data of the first B classes (sorted labels, or the
  order of ``classes``); every later session = N new classes with exactly K training examples each,
  drawn with the run's seed from the training split (never the test split) and recorded in
  ``Benchmark.info["fscil"]``. It is a class-IL benchmark with uneven tasks (``scenario`` is
  ``class``: the same masks, so every class-IL strategy runs), one task per session.

Evaluation of task j after training task i masks the same way: task-IL over task j's classes,
class-IL over the classes of tasks 1..max(i, j) (the head as it is when task j is met), domain-IL
over all outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import TensorData, load_dataset
from .data.sources import DATASETS
from .errors import UsageError, closest

SCENARIOS = ("task", "domain", "class", "fscil")
KINDS = ("permuted", "rotated", "split")
SEQUENCES = {"mnist-fashion-mnist": ("mnist", "fashion-mnist"), "fashion-mnist-mnist": ("fashion-mnist", "mnist")}


@dataclass
class Task:
    """One task: its data with targets in the model's output space, and the outputs it uses."""

    id: int
    name: str
    train: TensorData
    test: TensorData | None  # None when built for model selection (the test split is never read)
    classes: list[int]
    val: TensorData | None = None

    def ids(self, n: int | None = None) -> torch.Tensor:
        """The task index of each of ``n`` samples (default: every training sample), as a LongTensor."""
        return torch.full((len(self.train) if n is None else n,), self.id, dtype=torch.long, device=self.train.device)


@dataclass
class Benchmark:
    """A sequence of tasks and its output space: ``scenario`` (task, domain or class) decides which of
    the ``n_outputs`` outputs compete for a sample of each task (the masks of the loop and evaluation)."""

    name: str
    scenario: str
    tasks: list[Task]
    n_outputs: int
    input_shape: tuple[int, ...]
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        T, n = len(self.tasks), self.n_outputs
        own = torch.zeros(T, n, dtype=torch.bool)  # own[k]: task k's outputs
        for task in self.tasks:
            own[task.id, task.classes] = True
        seen = own.cumsum(0) > 0  # seen[k]: outputs of tasks 0..k
        if self.scenario == "task":
            masks = own
        elif self.scenario == "class":
            masks = seen
        else:
            masks = torch.ones(T, n, dtype=torch.bool)
        self._masks, self._seen = masks, seen
        self._bias = torch.zeros(T, n).masked_fill_(~masks, float("-inf"))
        self._own_bias = torch.zeros(T, n).masked_fill_(~own, float("-inf"))

    def classes_before(self, task_id: int) -> list[int]:
        """The output indices of the tasks before ``task_id`` (sorted)."""
        return [] if task_id <= 0 else self._seen[task_id - 1].nonzero().flatten().tolist()

    def classes_upto(self, task_id: int) -> list[int]:
        """The output indices of tasks 0..``task_id`` (sorted)."""
        return self._seen[task_id].nonzero().flatten().tolist()

    def index_before(self, task_id: int) -> torch.Tensor:
        """``classes_before`` as a LongTensor on the benchmark's device (made once, for per-step use)."""
        return self._index("before", task_id, self.classes_before)

    def index_upto(self, task_id: int) -> torch.Tensor:
        """``classes_upto`` as a LongTensor on the benchmark's device (made once, for per-step use)."""
        return self._index("upto", task_id, self.classes_upto)

    def _index(self, kind: str, task_id: int, classes) -> torch.Tensor:
        cache = self.__dict__.setdefault("_index_cache", {})
        key = (kind, task_id, self._bias.device)
        if key not in cache:
            with torch.inference_mode(False):  # (may be made first during an evaluation)
                cache[key] = torch.tensor(classes(task_id), dtype=torch.long, device=self._bias.device)
        return cache[key]

    def active_outputs(self, task_id: int) -> torch.Tensor:
        """Output indices that compete when task ``task_id`` trains on its own data."""
        return self._masks[task_id].nonzero().flatten()

    def mask_logits(self, logits: torch.Tensor, t: torch.Tensor, upto: int) -> torch.Tensor:
        """Training mask: task-IL by each sample's task ``t``; class-IL by the tasks up to ``upto``."""
        if self.scenario == "task":
            return logits + self._bias[t]
        if self.scenario == "class":
            return logits + self._bias[upto]
        return logits

    def eval_bias(self, trained_upto: int, task_id: int, task_aware: bool = False) -> torch.Tensor:
        """Additive mask [n_outputs] for testing task ``task_id`` after training tasks 0..trained_upto.
        ``task_aware``: only the task's own classes compete (task-IL's evaluation, in any scenario)."""
        if task_aware:
            return self._own_bias[task_id]
        if self.scenario == "class":
            return self._bias[max(trained_upto, task_id)]
        return self._bias[task_id]

    def to(self, device) -> Benchmark:
        """Move every task's data and the scenario's masks to ``device`` (in place); returns self."""
        moved: dict = {}  # (the tasks' views share one copy of each dataset: it moves once)
        for t in self.tasks:
            t.train = t.train.to(device, moved)
            t.test = None if t.test is None else t.test.to(device, moved)
            t.val = None if t.val is None else t.val.to(device, moved)
        self._bias, self._own_bias = self._bias.to(device), self._own_bias.to(device)
        return self

    @property
    def device(self) -> torch.device:
        """The device the tasks' data lives on."""
        return self.tasks[0].train.device

    def first(self, k: int) -> Benchmark:
        """The same benchmark reduced to its first ``k`` tasks (same outputs, same masks for them)."""
        if not 1 <= k <= len(self.tasks):
            raise UsageError(f"first_tasks must be between 1 and {len(self.tasks)} (the benchmark's tasks), got {k}")
        if k == len(self.tasks):
            return self
        return Benchmark(
            name=self.name,
            scenario=self.scenario,
            tasks=self.tasks[:k],
            n_outputs=self.n_outputs,
            input_shape=self.input_shape,
            info=dict(self.info, first_tasks=k),
        ).to(self.device)

    def describe(self) -> str:
        """One line: name, scenario, number of tasks and outputs, input shape, train/test sizes."""
        sizes = ", ".join(f"{len(t.train)}/{len(t.test) if t.test is not None else '-'}" for t in self.tasks)
        return (
            f"{self.name} ({self.scenario}-incremental): {len(self.tasks)} tasks, "
            f"{self.n_outputs} outputs, input {tuple(self.input_shape)}, train/test sizes {sizes}"
        )


def benchmark_names() -> list[str]:
    """Every benchmark name that ``--benchmark`` accepts (kind-dataset pairs, then the sequences)."""
    return [f"{k}-{d}" for k in KINDS for d in DATASETS] + list(SEQUENCES)


DEFAULT_TASKS = {"permuted": 5, "rotated": 5}


def build(
    name: str,
    scenario: str = "task",
    tasks: int | None = None,
    seed: int = 0,
    data_dir=None,
    classes: str | list | None = None,
    val_fraction: float = 0.0,
    first_unpermuted: bool = False,
    angles: list[float] | None = None,
    download: bool = True,
    progress: bool = True,
    with_test: bool = True,
    base_classes: int | None = None,
    ways: int | None = None,
    shots: int | None = None,
    sessions: int | None = None,
    session_lists=None,
    blurry: float = 0.0,
    blurry_disjoint: float = 50.0,
) -> Benchmark:
    """Build a benchmark by name (see ``benchmark_names()``) in one scenario.

    ``with_test=False`` builds it for model selection: the test split is never touched and every
    task's ``test`` is None (evaluate on ``val``, which needs ``val_fraction``).
    ``scenario="fscil"``: ``base_classes`` B, ``ways`` N, ``shots`` K and ``sessions`` (None: as many
    as the classes allow) define the sessions (see the module docstring); or ``session_lists``, a
    folder of the standard fixed index lists (``session_1.txt``, ``session_2.txt``, ...: one row of
    the training split per line, the CIFAR-100 protocol of Tao et al. 2020), which fixes them.
    ``blurry`` M > 0 (split benchmarks, class-IL): the i-Blurry-N-M stream (``_blurry``).
    """
    if scenario not in SCENARIOS:
        raise UsageError(
            f"unknown scenario {scenario!r}{closest(scenario, SCENARIOS)}; choose one of: {', '.join(SCENARIOS)}"
        )
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"validation fraction must be in [0, 1), got {val_fraction}")
    if tasks is not None and tasks < 1:
        raise UsageError(f"the number of tasks must be at least 1, got {tasks}")
    sequence = name in SEQUENCES
    fscil = scenario == "fscil"
    if fscil:
        if not name.startswith("split-"):
            raise UsageError(
                f"--scenario fscil applies to split benchmarks only (e.g. split-fashion-mnist), not {name}"
            )
        if tasks is not None and tasks != sessions:  # (a recorded run has both, equal)
            raise UsageError("--scenario fscil counts sessions, not tasks: use --sessions instead of --tasks")
        if val_fraction > 0:
            raise UsageError("--scenario fscil does not hold out validation data yet; drop --val-fraction")
        _check_fscil_numbers(base_classes, ways, shots, sessions, session_lists is not None)
    elif any(v is not None for v in (base_classes, ways, shots, sessions, session_lists)):
        raise UsageError(
            "--base-classes, --ways, --shots, --sessions and --session-lists apply to --scenario fscil only"
        )

    if blurry:
        if not name.startswith("split-") or scenario != "class":
            raise UsageError(
                f"--blurry applies to split benchmarks in class-IL (e.g. --benchmark split-mnist "
                f"--scenario class), not {name} in {scenario}"
            )
        if not 0 < blurry < 100 or not 0 <= blurry_disjoint <= 100:
            raise UsageError(
                f"--blurry must be in (0, 100) and --blurry-disjoint in [0, 100], got {blurry}, {blurry_disjoint}"
            )
    if not with_test and val_fraction <= 0:
        raise UsageError("selecting on validation data needs a validation fraction > 0 (--val-fraction)")

    def load(dataset):
        train, test = load_dataset(
            dataset, data_dir=_dir_for(dataset, data_dir, sequence), download=download, progress=progress
        )
        return train, (test if with_test else None)

    g = torch.Generator().manual_seed(seed)

    if name in SEQUENCES:
        names = SEQUENCES[name]
        if tasks not in (None, len(names)):
            raise UsageError(f"{name} has exactly {len(names)} tasks, got --tasks {tasks}")
        raw = []
        for d in names:
            train, test = load(d)
            raw.append((d, train, test, sorted(int(c) for c in train.y.unique())))
        shapes = {tuple(r[1].shape[1:]) for r in raw}
        if len(shapes) != 1:
            raise UsageError(f"{name}: the datasets have different image shapes {sorted(shapes)}")
    else:
        kind, _, dataset = name.partition("-")
        if kind not in KINDS or dataset not in DATASETS:
            raise UsageError(f"unknown benchmark {name!r}{closest(name, benchmark_names())}; see `forgetless list`")
        train, test = load(dataset)
        if fscil:
            if session_lists is not None:
                raw, fscil_info = _fscil_lists(
                    dataset, train, test, classes, session_lists, base_classes, ways, shots, sessions
                )
            else:
                raw, fscil_info = _fscil(dataset, train, test, classes, base_classes, ways, shots, sessions, seed)
        elif kind == "split":
            raw = _split(dataset, train, test, tasks, classes)
        else:
            if classes is not None:
                raise UsageError("--classes applies to split benchmarks only")
            n = tasks or DEFAULT_TASKS[kind]
            labels = sorted(int(c) for c in train.y.unique())
            if kind == "permuted":
                raw = []
                for k in range(n):
                    perm = torch.randperm(math.prod(train.shape[1:]), generator=g)
                    if k == 0 and first_unpermuted:
                        perm = None  # (the original images)
                    raw.append((f"{dataset} permutation {k + 1}", _permute(train, perm), _permute(test, perm), labels))
            else:
                if angles is None:
                    angles = [k * 180.0 / n for k in range(n)]
                if len(angles) != n:
                    raise UsageError(f"{len(angles)} angles given for {n} tasks; give one angle per task")
                raw = [(f"{dataset} rotated {a:g} deg", _rotate(train, a), _rotate(test, a), labels) for a in angles]

    if fscil:
        scenario = "class"  # (an fscil benchmark is a class-IL benchmark with uneven tasks)
    task_list, n_outputs = _apply_scenario(raw, scenario)
    blurry_info = _blurry(task_list, blurry, blurry_disjoint, seed) if blurry else None
    if val_fraction > 0:
        for task in task_list:
            n_val = round(val_fraction * len(task.train))
            if n_val < 1 or n_val >= len(task.train):
                raise UsageError(f"validation fraction {val_fraction} leaves no data in task {task.id + 1}")
            order = torch.randperm(len(task.train), generator=g)
            task.val, task.train = task.train.subset(order[:n_val]), task.train.subset(order[n_val:])
    info = {"seed": seed, "val_fraction": val_fraction}
    if fscil:
        info["fscil"] = fscil_info
    if blurry_info is not None:
        info["blurry"] = blurry_info
    return Benchmark(
        name=name,
        scenario=scenario,
        tasks=task_list,
        n_outputs=n_outputs,
        input_shape=tuple(raw[0][1].shape[1:]),
        info=info,
    )


def _blurry(tasks: list[Task], m: float, n: float, seed: int) -> dict:
    """Make the tasks an i-Blurry-N-M stream (Koh et al., ICLR 2022, "Online Continual Learning on
    Class Incremental Blurry Task Configuration with Anytime Inference"), in place; returns what
    result.json records.

    round(N % of the classes) are *disjoint* (chosen with a generator seeded by ``seed`` alone):
    all their training samples stay in their own task. Every other class is *blurry*: round(M % of
    its training samples), chosen at random, move to the other tasks, each to one drawn uniformly
    among them; the rest stay in the class's own task (its "major" task). So a task's stream holds
    mostly its own classes, plus about M % (times the blurry share of its classes) of samples of
    other tasks' blurry classes, also of classes that come later. Test (and validation) data stay
    with their own task, so the accuracy matrix keeps its meaning.
    """
    g = torch.Generator().manual_seed(seed + 7919)  # (not the stream of the other seeded choices)
    classes = sorted(c for t in tasks for c in t.classes)
    order = torch.randperm(len(classes), generator=g).tolist()
    disjoint = sorted(classes[i] for i in order[: round(n / 100 * len(classes))])
    moved: list[list[TensorData]] = [[] for _ in tasks]
    keep: list[torch.Tensor] = []
    counts = [0] * len(tasks)
    for task in tasks:
        y = task.train.y.cpu()
        stay = torch.ones(len(y), dtype=torch.bool)
        others = [k for k in range(len(tasks)) if k != task.id]
        for c in task.classes:
            if c in disjoint or not others:
                continue
            rows = (y == c).nonzero().flatten()
            pick = rows[torch.randperm(len(rows), generator=g)[: round(m / 100 * len(rows))]]
            dest = torch.randint(len(others), (len(pick),), generator=g)
            for j, k in enumerate(others):
                go = pick[dest == j]
                if len(go):
                    moved[k].append(task.train.subset(go.to(task.train.device)))
                    counts[k] += len(go)
            stay[pick] = False
        keep.append(stay)
    for task, stay in zip(tasks, keep):
        kept = task.train.subset(stay.nonzero().flatten().to(task.train.device))
        task.train = TensorData.cat([kept, *moved[task.id]])
    return {
        "m": m,
        "n": n,
        "disjoint_classes": disjoint,
        "samples_from_other_tasks": counts,
        "fraction_from_other_tasks": [c / max(len(t.train), 1) for c, t in zip(counts, tasks)],
    }


def _dir_for(dataset: str, data_dir, sequence: bool):
    """The data directory for one dataset: ``data_dir`` may map dataset names to directories
    ({"mnist": "..."}); a plain directory serves a sequence only through its subfolders
    (DIR/mnist, DIR/fashion-mnist), since files placed directly in it belong to one dataset."""
    if data_dir is None:
        return None
    if isinstance(data_dir, dict):
        return data_dir.get(dataset)
    if sequence:
        sub = Path(data_dir) / dataset
        return sub if sub.is_dir() else None
    return data_dir


def parse_data_dir(text: str | None):
    """'DIR' -> 'DIR'; 'mnist=A,fashion-mnist=B' -> {'mnist': 'A', 'fashion-mnist': 'B'}."""
    if text is None or "=" not in text:
        return text
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in DATASETS:
            raise UsageError(
                f"--data-dir {text!r}: write DIR or NAME=DIR,NAME=DIR with NAME one of {', '.join(DATASETS)}"
            )
        out[key.strip()] = value.strip()
    return out


def parse_groups(text: str) -> list[list[int]]:
    """'0,2,4|1,3,5' -> [[0, 2, 4], [1, 3, 5]]."""
    groups = []
    for part in text.split("|"):
        try:
            group = [int(c) for c in part.split(",") if c.strip()]
        except ValueError:
            raise UsageError(
                f"--classes {text!r}: use comma-separated class numbers, groups "
                f"separated by '|', e.g. \"0,2,4,6,8|1,3,5,7,9\""
            ) from None
        if not group:
            raise UsageError(f"--classes {text!r} has an empty class group")
        groups.append(group)
    return groups


def _checked_groups(dataset, labels, classes):
    """``--classes`` as (groups, all classes in order): every class in the dataset, none twice."""
    groups = parse_groups(classes) if isinstance(classes, str) else [list(g) for g in classes]
    flat = [c for g in groups for c in g]
    missing = sorted(set(flat) - set(labels))
    if missing:
        raise UsageError(f"classes {missing} are not in {dataset} (its classes: {labels[0]}..{labels[-1]})")
    if len(set(flat)) != len(flat):
        raise UsageError("a class appears in more than one group of --classes")
    return groups, flat


def _split(dataset, train, test, tasks, classes):
    labels = sorted(int(c) for c in train.y.unique())
    if classes is not None:
        groups, _ = _checked_groups(dataset, labels, classes)
        if tasks not in (None, len(groups)):
            raise UsageError(f"--classes gives {len(groups)} groups but --tasks is {tasks}")
    else:
        n = tasks or (len(labels) // 2)
        if n > len(labels):
            raise UsageError(f"{dataset} has {len(labels)} classes: it cannot be split into {n} tasks")
        if len(labels) % n:
            raise UsageError(
                f"{len(labels)} classes do not split evenly into {n} tasks; give explicit groups with --classes"
            )
        per = len(labels) // n
        groups = [labels[i * per : (i + 1) * per] for i in range(n)]
    raw = []
    for group in groups:
        keep = torch.tensor(group)
        raw.append(
            (
                f"{dataset} classes {','.join(map(str, group))}",
                train.subset(torch.isin(train.y, keep)),
                None if test is None else test.subset(torch.isin(test.y, keep)),
                group,
            )
        )
    return raw


def _check_fscil_numbers(base_classes, ways, shots, sessions, lists=False):
    for flag, value, low in (
        ("--base-classes", base_classes, 1),
        ("--ways", ways, 1),
        ("--shots", shots, 1),
        ("--sessions", sessions, 1),
    ):
        if value is None and flag != "--sessions" and not lists:
            raise UsageError(f"--scenario fscil needs {flag} (e.g. --base-classes 6 --ways 1 --shots 5)")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise UsageError(f"{flag} must be an integer >= {low}, got {value!r}")


def _fscil(dataset, train, test, classes, base_classes, ways, shots, sessions, seed):
    """The sessions of FSCIL (see the module docstring): (raw tasks, the info recorded in result.json).

    The K examples of each new class are drawn without replacement from that class's training
    examples with a generator seeded by ``seed`` alone (one draw per class, in class order), so the
    same seed gives the same shots whatever else the run does; their indices (rows of the dataset's
    training split) are recorded."""
    labels = sorted(int(c) for c in train.y.unique())
    if classes is not None:
        _, order = _checked_groups(dataset, labels, classes)
    else:
        order = labels
    if base_classes >= len(order):
        raise UsageError(
            f"--base-classes {base_classes} leaves none of the {len(order)} classes for the "
            f"few-shot sessions; choose fewer than {len(order)}"
        )
    most = 1 + (len(order) - base_classes) // ways
    if most < 2:
        raise UsageError(
            f"{len(order) - base_classes} classes remain after {base_classes} base classes: too few "
            f"for one session of --ways {ways}; lower --ways or --base-classes"
        )
    if sessions is None:
        sessions = most
    elif sessions > most:
        raise UsageError(
            f"--sessions {sessions} needs {base_classes + (sessions - 1) * ways} classes "
            f"({base_classes} base + {sessions - 1} x {ways} ways) but {dataset} has {len(order)}; "
            f"at most {most} sessions"
        )
    g = torch.Generator().manual_seed(seed)
    base = order[:base_classes]
    keep = torch.tensor(base)
    raw = [
        (
            f"{dataset} base classes {','.join(map(str, base))}",
            train.subset(torch.isin(train.y, keep)),
            None if test is None else test.subset(torch.isin(test.y, keep)),
            base,
        )
    ]
    chosen: dict[str, list[int]] = {}
    for s in range(1, sessions):
        group = order[base_classes + (s - 1) * ways : base_classes + s * ways]
        rows = []
        for c in group:
            idx = (train.y == c).nonzero().flatten()
            if len(idx) < shots:
                raise UsageError(f"class {c} of {dataset} has {len(idx)} training examples, fewer than --shots {shots}")
            pick = idx[torch.randperm(len(idx), generator=g)[:shots].to(idx.device)].sort().values
            chosen[str(c)] = pick.tolist()
            rows.append(pick)
        keep = torch.tensor(group)
        raw.append(
            (
                f"{dataset} session {s + 1}: classes {','.join(map(str, group))}, {shots}-shot",
                train.subset(torch.cat(rows)),
                None if test is None else test.subset(torch.isin(test.y, keep)),
                group,
            )
        )
    info = {
        "base_classes": base_classes,
        "ways": ways,
        "shots": shots,
        "sessions": sessions,
        "class_order": order[: base_classes + (sessions - 1) * ways],
        "shot_indices": chosen,
    }
    return raw, info


def _fscil_lists(dataset, train, test, classes, folder, base_classes, ways, shots, sessions):
    """The sessions read from fixed index lists: ``folder/session_k.txt`` (k = 1, 2, ... up to the
    first missing file, or ``sessions``) each hold rows of the training split, one integer a line
    (the format of the CIFAR-100 lists of Tao et al. 2020, rows of CIFAR-100's 50,000 training
    images in file order). A session's classes are the labels of its rows; its test data is every
    test example of those classes. Given --base-classes / --ways / --shots must agree with the lists."""
    if classes is not None:
        raise UsageError("--session-lists fixes the classes of every session; drop --classes")
    folder = Path(folder)
    if not (folder / "session_1.txt").is_file():
        raise UsageError(
            f"--session-lists {folder}: no session_1.txt there (the lists are session_1.txt, "
            f"session_2.txt, ...: one training-set row a line)"
        )
    n_files = 0
    while (folder / f"session_{n_files + 1}.txt").is_file():
        n_files += 1
    if sessions is not None and sessions > n_files:
        raise UsageError(f"--sessions {sessions}: {folder} has lists for {n_files} sessions")
    seen: set[int] = set()
    raw, chosen, order = [], {}, []
    for k in range(1, (sessions or n_files) + 1):
        path = folder / f"session_{k}.txt"
        try:
            rows = torch.tensor([int(line) for line in path.read_text().split()], dtype=torch.long)
        except ValueError:
            raise UsageError(f"{path}: every line must be a row number of the training split") from None
        if not len(rows) or int(rows.min()) < 0 or int(rows.max()) >= len(train):
            raise UsageError(
                f"{path}: rows must be in 0..{len(train) - 1} ({dataset}'s training split), "
                f"and the file must not be empty"
            )
        y = train.y[rows.to(train.y.device)].cpu()
        group = sorted(int(c) for c in y.unique())
        if seen & set(group):
            raise UsageError(f"{path}: classes {sorted(seen & set(group))} already came in an earlier session")
        seen |= set(group)
        order += group
        counts = torch.bincount(y, minlength=max(group) + 1)[group].tolist()
        if k > 1:
            want = {"--ways": (ways, len(group)), "--shots": (shots, counts[0])}
            if len(set(counts)) != 1:
                raise UsageError(f"{path}: its classes have different numbers of examples {counts}")
            for c in group:
                chosen[str(c)] = rows[y == c].tolist()
        else:
            want = {"--base-classes": (base_classes, len(group))}
        for flag, (given, found) in want.items():
            if given is not None and given != found:
                raise UsageError(f"{flag} {given} disagrees with {path} ({found}); drop {flag} or fix the lists")
        keep = torch.tensor(group)
        name = (
            f"{dataset} base classes {group[0]}..{group[-1]}"
            if k == 1
            else f"{dataset} session {k}: classes {','.join(map(str, group))}, {counts[0]}-shot"
        )
        raw.append(
            (
                name,
                train.subset(rows.to(train.y.device)),
                None if test is None else test.subset(torch.isin(test.y, keep)),
                group,
            )
        )
    later = raw[1:]
    info = {
        "base_classes": len(raw[0][3]),
        "ways": len(later[0][3]) if later else None,
        "shots": (len(later[0][1]) // len(later[0][3])) if later else None,
        "sessions": len(raw),
        "class_order": order,
        "shot_indices": chosen,
        "session_lists": str(folder),
    }
    return raw, info


def _apply_scenario(raw, scenario):
    """Map each task's original labels into output indices (see the module docstring)."""
    label_sets = [r[3] for r in raw]
    shared = len({c for s in label_sets for c in s}) < sum(len(s) for s in label_sets)
    offset, tasks = 0, []
    n_outputs = max(len(s) for s in label_sets) if scenario == "domain" else 0
    for k, (name, train, test, labels) in enumerate(raw):
        if scenario == "domain":
            outputs = list(range(len(labels)))
        elif shared:
            outputs = list(range(offset, offset + len(labels)))
            offset += len(labels)
        else:
            outputs = list(labels)
        if scenario != "domain":
            n_outputs = max(n_outputs, max(outputs) + 1)
        lut = torch.full((max(labels) + 1,), -1, dtype=torch.long)
        lut[torch.tensor(labels)] = torch.tensor(outputs)
        tasks.append(
            Task(
                id=k,
                name=name,
                classes=outputs,
                train=train.with_labels(lut[train.y]),
                test=None if test is None else test.with_labels(lut[test.y]),
            )
        )
    return tasks, n_outputs


def _permute(data: TensorData | None, perm: torch.Tensor | None) -> TensorData | None:
    """A view of ``data`` with its pixels permuted (None: unpermuted): every task of a permuted
    benchmark reads the one uint8 copy of the dataset, gathering each batch's pixels when taken."""
    if data is None or perm is None:
        return data
    return data.permuted(perm)


def _rotate(data: TensorData, degrees: float) -> TensorData:
    """Rotate every image by ``degrees`` (bilinear, zero padding) about its centre."""
    if data is None or degrees % 360 == 0:
        return data
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])
    out = torch.empty(data.shape, dtype=torch.float32)
    for i in range(0, len(data), 8192):  # chunks bound the grid's memory
        x = data.take(slice(i, i + 8192))
        grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
        out[i : i + 8192] = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    return TensorData(out, data.y)
