"""Metrics of the accuracy matrix: pure functions, inputs are never modified, and one registry.

``R[i][j]`` is the test accuracy on task j after training task i (0-based, T x T, fractions);
``b[j]`` is the accuracy of the randomly initialised model on task j.

- average accuracy A_k = (1/k) sum_{j<=k} R[k, j], for every k (1-based k; ``average_accuracy``
  gives the final A_T);
- BWT = 1/(T-1) sum_{j<T} (R[T, j] - R[j, j])              (Lopez-Paz & Ranzato 2017)
- FWT = 1/(T-1) sum_{j>1} (R[j-1, j] - b[j])                (Lopez-Paz & Ranzato 2017)
- forgetting f_j = max_{l<T} R[l, j] - R[T, j], averaged over j < T   (Chaudhry et al. 2018)
- learning accuracy: the diagonal R[j, j]
- intransigence I_k = a*_k - R[k, k], averaged over k = 1..T (Chaudhry et al. 2018, "Riemannian
  Walk for Incremental Learning", eq. 9), where a*_k is the accuracy on task k of a reference model
  trained from scratch on the data of tasks 1..k together and evaluated as the scenario evaluates
  task k right after task k (see ``intransigence``).
- anytime accuracy A_AUC (Koh et al., ICLR 2022, "Online Continual Learning on Class Incremental
  Blurry Task Configuration with Anytime Inference"): the area under the accuracy curve measured at
  fixed intervals during training, normalised by its length: the mean over the evaluation points
  p of A(p) = (1/(k_p+1)) sum_{j<=k_p} acc_p[j], the average accuracy over the tasks seen so far
  (k_p: the task being trained at p). With equal intervals this is the paper's sum of f(i dn) dn
  divided by the number of samples (``anytime_accuracy``).
Metrics that need two tasks are ``None`` for one.

Few-shot class-incremental learning (scenario ``fscil``; Tao et al. 2020, "Few-Shot Class-Incremental
Learning", and the papers after it), with ``n[j]`` the test size of session j (its classes' test
examples): pooled accuracy after session i, over the test data of every class seen so far,
  S_i = sum_{j<=i} n[j] R[i, j] / sum_{j<=i} n[j]   (the sample-weighted mean of the seen tasks)
``session_accuracy`` = [S_1..S_T], ``avg`` = mean_i S_i (AVG), ``pd`` = S_1 - S_T (performance
drop), after the last session ``base_accuracy`` = R[T, 1], ``novel_accuracy`` = pooled accuracy
over sessions 2..T, and ``harmonic_mean`` 2 b n / (b + n) of the two.

``REGISTRY`` lists every metric once (name, label, one-line help, higher-is-better, formula): the
summary tables, the report, the figures and the command line read it instead of listing metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

# An accuracy matrix R: a square nested list or array; a vector: one value per task or session.
Vector = Sequence[float] | np.ndarray


@dataclass(frozen=True)
class Metric:
    """One metric: ``key`` in result.json / summary.json, a short ``label``, one-line ``help``,
    ``higher_is_better`` (None: neither), the ``formula`` as text, and whether it is one number
    (``scalar``) or one value per task."""

    key: str
    label: str
    help: str
    higher_is_better: bool | None
    formula: str
    scalar: bool = True


REGISTRY: dict[str, Metric] = {
    m.key: m
    for m in (
        Metric(
            "average_accuracy",
            "final average accuracy",
            "mean accuracy over all tasks after the last one (higher is better)",
            True,
            "A_T = (1/T) sum_j R[T, j]",
        ),
        Metric(
            "bwt",
            "BWT",
            "backward transfer: final minus just-learnt accuracy, mean over tasks 1..T-1; negative means forgetting",
            True,
            "BWT = 1/(T-1) sum_{j<T} (R[T, j] - R[j, j])",
        ),
        Metric(
            "fwt",
            "FWT",
            "forward transfer: accuracy on a task before training it, minus the untrained model's",
            True,
            "FWT = 1/(T-1) sum_{j>1} (R[j-1, j] - b[j])",
        ),
        Metric(
            "forgetting",
            "forgetting",
            "best accuracy a task ever had minus its final one, mean over tasks 1..T-1 (lower is better)",
            False,
            "f_j = max_{l<T} R[l, j] - R[T, j]; F = 1/(T-1) sum_{j<T} f_j",
        ),
        Metric(
            "intransigence",
            "intransigence",
            "accuracy of a joint model trained on tasks 1..k minus the run's accuracy on task k just after "
            "learning it, mean over tasks (lower is better)",
            False,
            "I_k = a*_k - R[k, k]; I = (1/T) sum_k I_k",
        ),
        Metric(
            "anytime_accuracy",
            "anytime accuracy (A_AUC)",
            "mean over the evaluations during training of the average accuracy over the tasks seen so far "
            "(area under the accuracy curve; --online or --eval-every)",
            True,
            "A_AUC = (1/P) sum_p (1/(k_p+1)) sum_{j<=k_p} acc_p[j]",
        ),
        Metric(
            "avg",
            "AVG (FSCIL)",
            "few-shot class-IL: mean over sessions of the pooled accuracy on every class seen",
            True,
            "AVG = (1/T) sum_i S_i, S_i = sum_{j<=i} n_j R[i, j] / sum_{j<=i} n_j",
        ),
        Metric(
            "pd",
            "PD (FSCIL)",
            "few-shot class-IL: performance drop, first session's accuracy minus the last's (lower is better)",
            False,
            "PD = S_1 - S_T",
        ),
        Metric(
            "base_accuracy",
            "base accuracy",
            "few-shot class-IL: accuracy on the base classes after the last session",
            True,
            "R[T, 1]",
        ),
        Metric(
            "novel_accuracy",
            "novel accuracy",
            "few-shot class-IL: pooled accuracy on the novel classes (sessions 2..T) after the last session",
            True,
            "sum_{j>1} n_j R[T, j] / sum_{j>1} n_j",
        ),
        Metric(
            "harmonic_mean",
            "harmonic mean",
            "few-shot class-IL: harmonic mean of base and novel accuracy",
            True,
            "H = 2 b n / (b + n)",
        ),
        Metric(
            "session_accuracy",
            "session accuracy",
            "few-shot class-IL: pooled accuracy on the test data of every class seen, after each session",
            True,
            "S_i = sum_{j<=i} n_j R[i, j] / sum_{j<=i} n_j",
            scalar=False,
        ),
        Metric(
            "average_accuracies",
            "A_k",
            "average accuracy over tasks 1..k after each task k",
            True,
            "A_k = (1/k) sum_{j<=k} R[k, j]",
            scalar=False,
        ),
        Metric(
            "learning_accuracy",
            "learning accuracy",
            "each task's accuracy just after it was learnt (the diagonal)",
            True,
            "R[k, k]",
            scalar=False,
        ),
        Metric(
            "intransigence_per_task",
            "intransigence per task",
            "I_k for every task k: joint reference on tasks 1..k minus the just-learnt accuracy",
            False,
            "I_k = a*_k - R[k, k]",
            scalar=False,
        ),
    )
}


def scalar_metrics() -> list[str]:
    """The keys of the one-number metrics, in the registry's order (the columns of a summary)."""
    return [k for k, m in REGISTRY.items() if m.scalar]


def better(key: str, a: float, b: float) -> bool:
    """Whether value ``a`` of metric ``key`` is strictly better than ``b``."""
    m = REGISTRY[key]
    if m.higher_is_better is None:
        raise ValueError(f"{key} has no better direction")
    return a > b if m.higher_is_better else a < b


def _matrix(R: ArrayLike) -> np.ndarray:
    M = np.array(R, dtype=float)  # a copy: callers' data is never touched
    if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] == 0:
        raise ValueError(f"the accuracy matrix must be square and non-empty, got shape {M.shape}")
    return M


def average_accuracies(R: ArrayLike) -> list[float]:
    """[A_1, ..., A_T]: mean accuracy over the tasks seen so far, after each task."""
    M = _matrix(R)
    return [float(M[k, : k + 1].mean()) for k in range(len(M))]


def average_accuracy(R: ArrayLike) -> float:
    """A_T: the mean accuracy over all tasks after the last one."""
    return average_accuracies(R)[-1]


def backward_transfer(R: ArrayLike) -> float | None:
    """BWT = 1/(T-1) sum_{j<T} (R[T, j] - R[j, j]); None for one task."""
    M = _matrix(R)
    T = len(M)
    return None if T < 2 else float(np.mean(M[-1, :-1] - np.diag(M)[:-1]))


def forward_transfer(R: ArrayLike, b: Vector) -> float | None:
    """FWT = 1/(T-1) sum_{j>1} (R[j-1, j] - b[j]), b the untrained model's accuracies; None for one task."""
    M, b0 = _matrix(R), np.asarray(b, dtype=float)
    T = len(M)
    if b0.shape != (T,):
        raise ValueError(f"need one initial accuracy per task ({T}), got {b0.shape}")
    return None if T < 2 else float(np.mean([M[j - 1, j] - b0[j] for j in range(1, T)]))


def forgetting_per_task(R: ArrayLike) -> list[float]:
    """f_j for j < T: the best accuracy task j ever had before the last task, minus its final one."""
    M = _matrix(R)
    return [float(M[:-1, j].max() - M[-1, j]) for j in range(len(M) - 1)]


def forgetting(R: ArrayLike) -> float | None:
    """The mean of ``forgetting_per_task``; None for one task."""
    f = forgetting_per_task(R)
    return float(np.mean(f)) if f else None


def learning_accuracy(R: ArrayLike) -> list[float]:
    """The diagonal R[k, k]: each task's accuracy just after it was learnt."""
    return [float(v) for v in np.diag(_matrix(R))]


def intransigence_per_task(R: ArrayLike, reference: Vector) -> list[float]:
    """[I_1, ..., I_T] with I_k = a*_k - R[k, k] (Chaudhry et al. 2018, eq. 9).

    ``reference[k]`` is a*_k: the accuracy on task k of a model trained from scratch on the data of
    tasks 1..k together, evaluated as the run evaluates task k right after learning it (class-IL:
    over the classes of tasks 1..k). ``experiment.compare`` gets it from a joint run with
    ``first_tasks=k``: that run's ``accuracy_matrix[-1][k-1]``. Positive I_k: the run learnt task k
    less well than a model that saw all the data so far at once could.
    """
    M, ref = _matrix(R), np.asarray(reference, dtype=float)
    if ref.shape != (len(M),):
        raise ValueError(f"need one reference accuracy per task ({len(M)}), got {ref.shape}")
    return [float(v) for v in ref - np.diag(M)]


def intransigence(R: ArrayLike, reference: Vector) -> float:
    """Intransigence I = (1/T) sum_k (a*_k - R[k, k]): the mean of ``intransigence_per_task``
    (Chaudhry et al. 2018), the inability to learn new tasks; lower is better."""
    return float(np.mean(intransigence_per_task(R, reference)))


def all_metrics(R: ArrayLike, b: Vector | None = None, reference: Vector | None = None) -> dict[str, Any]:
    """Every metric of one run, as stored in result.json."""
    out = {
        "average_accuracy": average_accuracy(R),
        "average_accuracies": average_accuracies(R),
        "bwt": backward_transfer(R),
        "fwt": forward_transfer(R, b) if b is not None else None,
        "forgetting": forgetting(R),
        "learning_accuracy": learning_accuracy(R),
    }
    if reference is not None:
        out["intransigence"] = intransigence(R, reference)
        out["intransigence_per_task"] = intransigence_per_task(R, reference)
    return out


def _sizes(R: ArrayLike, sizes: Vector) -> tuple[np.ndarray, np.ndarray]:
    M, n = _matrix(R), np.asarray(sizes, dtype=float)
    if n.shape != (len(M),) or (n <= 0).any():
        raise ValueError(f"need one positive test size per session ({len(M)}), got {list(sizes)}")
    return M, n


def session_accuracy(R: ArrayLike, sizes: Vector) -> list[float]:
    """[S_1, ..., S_T]: S_i = sum_{j<=i} n_j R[i, j] / sum_{j<=i} n_j, the top-1 accuracy on the pooled
    test data of the sessions seen so far (``sizes[j]`` = n_j, session j's test examples)."""
    M, n = _sizes(R, sizes)
    return [float((M[i, : i + 1] * n[: i + 1]).sum() / n[: i + 1].sum()) for i in range(len(M))]


def fscil_metrics(R: ArrayLike, sizes: Vector) -> dict[str, Any]:
    """The few-shot class-IL metrics (module docstring): session_accuracy, avg, pd, base_accuracy,
    novel_accuracy and harmonic_mean (novel and harmonic mean are None with one session)."""
    M, n = _sizes(R, sizes)
    S = session_accuracy(M, n)
    base = float(M[-1, 0])
    novel = float((M[-1, 1:] * n[1:]).sum() / n[1:].sum()) if len(M) > 1 else None
    harmonic = None if novel is None else (0.0 if base + novel == 0 else 2 * base * novel / (base + novel))
    return {
        "session_accuracy": S,
        "avg": float(np.mean(S)),
        "pd": S[0] - S[-1],
        "base_accuracy": base,
        "novel_accuracy": novel,
        "harmonic_mean": harmonic,
    }


def anytime_accuracy(points: Sequence[tuple[int, Vector]]) -> float | None:
    """A_AUC (module docstring) from evaluation points (task being trained k, accuracy on every task);
    None without points."""
    if not points:
        return None
    values = []
    for k, acc in points:
        if not 0 <= k < len(acc):
            raise ValueError(f"an evaluation point of task {k} has accuracies for {len(acc)} tasks")
        values.append(sum(acc[: k + 1]) / (k + 1))
    return float(sum(values) / len(values))
