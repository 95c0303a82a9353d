import numpy as np
import pytest

from forgetless import metrics as M

# R[i][j]: accuracy on task j after training task i
R = [[0.9, 0.1, 0.2], [0.6, 0.8, 0.3], [0.5, 0.7, 0.95]]
B = [0.1, 0.1, 0.1]


def test_average_accuracies_literal():
    assert M.average_accuracies(R) == pytest.approx([0.9, 0.7, (0.5 + 0.7 + 0.95) / 3])
    assert M.average_accuracy(R) == pytest.approx(0.7166666, abs=1e-6)


def test_bwt_literal():
    # ((0.5 - 0.9) + (0.7 - 0.8)) / 2
    assert M.backward_transfer(R) == pytest.approx(-0.25)


def test_fwt_literal_uses_row_before_and_initial_accuracy():
    # ((R[0][1] - b1) + (R[1][2] - b2)) / 2 = ((0.1 - 0.1) + (0.3 - 0.1)) / 2
    assert M.forward_transfer(R, B) == pytest.approx(0.1)


def test_forgetting_literal_takes_the_best_earlier_row():
    # task 0: max(0.9, 0.6) - 0.5 = 0.4; task 1: max(0.1, 0.8) - 0.7 = 0.1
    assert M.forgetting_per_task(R) == pytest.approx([0.4, 0.1])
    assert M.forgetting(R) == pytest.approx(0.25)
    # the best earlier accuracy need not be on the diagonal
    R2 = [[0.5, 0.0], [0.9, 0.9]]
    R3 = [[0.8, 0.0, 0.0], [0.9, 0.7, 0.0], [0.6, 0.6, 0.9]]
    assert M.forgetting(R2) == pytest.approx(0.5 - 0.9)  # the paper's definition: improvement is negative
    assert M.forgetting_per_task(R3) == pytest.approx([0.3, 0.1])


def test_learning_accuracy_and_intransigence():
    assert M.learning_accuracy(R) == pytest.approx([0.9, 0.8, 0.95])
    assert M.intransigence(R, [0.95, 0.9, 0.95]) == pytest.approx((0.05 + 0.1 + 0.0) / 3)


def test_intransigence_literal_by_hand():
    # a*_k: a joint model on tasks 1..k, scored on task k; R[k][k]: the run just after task k
    a_star = [0.92, 0.85, 0.97]
    # I_1 = 0.92 - 0.9 = 0.02, I_2 = 0.85 - 0.8 = 0.05, I_3 = 0.97 - 0.95 = 0.02
    assert M.intransigence_per_task(R, a_star) == pytest.approx([0.02, 0.05, 0.02])
    assert M.intransigence(R, a_star) == pytest.approx(0.09 / 3)
    # a run that learns a task better than the joint reference has negative intransigence there
    assert M.intransigence_per_task([[0.7, 0.0], [0.5, 0.9]], [0.6, 0.8]) == pytest.approx([-0.1, -0.1])
    m = M.all_metrics(R, B, reference=a_star)
    assert m["intransigence_per_task"] == pytest.approx([0.02, 0.05, 0.02])
    with pytest.raises(ValueError, match="one reference accuracy per task"):
        M.intransigence(R, a_star[:2])


def test_registry_describes_every_metric_all_metrics_gives():
    m = {
        **M.all_metrics(R, B, reference=[0.9, 0.9, 0.9]),
        **M.fscil_metrics(R, [10, 10, 10]),  # (fscil: its own)
        "anytime_accuracy": M.anytime_accuracy([(0, R[0]), (2, R[2])]),
    }  # (from the curves: its own)
    assert set(m) == set(M.REGISTRY)
    for key, info in M.REGISTRY.items():
        assert info.key == key and info.label and info.help and info.formula
        assert info.scalar == (not isinstance(m[key], list))
    assert M.scalar_metrics() == [
        "average_accuracy",
        "bwt",
        "fwt",
        "forgetting",
        "intransigence",
        "anytime_accuracy",
        "avg",
        "pd",
        "base_accuracy",
        "novel_accuracy",
        "harmonic_mean",
    ]
    assert M.better("average_accuracy", 0.8, 0.7) and M.better("forgetting", 0.1, 0.2)
    assert not M.better("intransigence", 0.2, 0.1) and not M.better("bwt", 0.1, 0.1)


def test_one_task_metrics_are_none():
    m = M.all_metrics([[0.8]], [0.1])
    assert m["average_accuracy"] == pytest.approx(0.8)
    assert m["bwt"] is None and m["fwt"] is None and m["forgetting"] is None


def test_metrics_do_not_modify_input():
    import copy

    A, b, ref = np.array(R), np.array(B), np.array([0.9, 0.9, 0.9])
    saved = (A.copy(), b.copy(), ref.copy())
    lists = (copy.deepcopy(R), list(B), [0.9, 0.9, 0.9])
    saved_lists = copy.deepcopy(lists)
    for args in ((A, b, ref), lists):
        m = M.all_metrics(*args[:2], reference=args[2])
        for fn in (
            M.average_accuracies,
            M.average_accuracy,
            M.backward_transfer,
            M.forgetting_per_task,
            M.forgetting,
            M.learning_accuracy,
        ):
            fn(args[0])
        M.forward_transfer(args[0], args[1])
        M.intransigence_per_task(args[0], args[2])
        M.intransigence(args[0], args[2])
        m["learning_accuracy"][0] = -1.0  # the outputs are new objects, not views of the input
    assert all((x == y).all() for x, y in zip((A, b, ref), saved))
    assert lists == saved_lists


def test_constant_matrix_has_no_forgetting_and_zero_bwt():
    C = np.triu(np.full((4, 4), 0.7)) + np.tril(np.full((4, 4), 0.7), -1)
    assert M.backward_transfer(C) == pytest.approx(0.0)
    assert M.forgetting(C) == pytest.approx(0.0)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        M.average_accuracy([[0.1, 0.2]])
    with pytest.raises(ValueError):
        M.forward_transfer(R, [0.1])
