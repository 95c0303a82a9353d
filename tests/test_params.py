"""Parameters and composition say what they do: declared once, checked in one place, recorded as given."""

import pytest

import forgetless as fl
from forgetless import Param, RunConfig, UsageError
from forgetless.strategies import STRATEGIES, Compose, make_strategy
from forgetless.strategies.baselines import Joint
from forgetless.strategies.distill import LwF
from forgetless.strategies.regularization import EWC

TINY = dict(benchmark="split-digits", scenario="task", iterations=3, model="mlp:16")


def test_every_parameter_is_declared_with_its_meaning():
    for name, cls in STRATEGIES.items():
        for key, p in cls.params.items():
            assert isinstance(p, Param) and p.help, (name, key)
            assert p.validate(p.default, key, name) == p.default  # every default passes its own check


@pytest.mark.parametrize(
    "decl,value,ok",
    [
        (Param(1.0, ">=0"), 0, 0.0),
        (Param(1.0, ">=0"), -1, None),
        (Param(1.0, "(0, 1]"), 1, 1.0),
        (Param(1.0, "(0, 1]"), 0.0, None),
        (Param(0.5, "[0, 1)"), 1.0, None),
        (Param(3, ">=1"), 2.0, 2),
        (Param(3, ">=1"), 2.5, None),
        (Param(3, ">=1"), True, None),
        (Param("a", ("a", "b")), "b", "b"),
        (Param("a", ("a", "b")), "c", None),
        (Param(False), 1, None),
        (Param(1000, ">=1", optional=True), None, None),
    ],
)
def test_param_checks_type_and_range_in_one_place(decl, value, ok):
    if ok is None and not (decl.optional and value is None):
        with pytest.raises(UsageError, match="parameter 'k' of 's'"):
            decl.validate(value, "k", "s")
    else:
        got = decl.validate(value, "k", "s")
        assert got == ok and type(got) is type(ok)


def test_python_construction_is_checked_like_the_command_line():
    with pytest.raises(UsageError, match="must be >=0"):
        EWC(lam=-1)
    with pytest.raises(UsageError, match="must be one of"):
        EWC(fisher="emprical")
    with pytest.raises(UsageError, match="no effect without distill=true"):
        make_strategy("dgr", {"temperature": 3.0})
    assert make_strategy("dgr", {"distill": True, "temperature": 3.0}).temperature == 3.0


def test_compose_refuses_two_parts_replacing_the_same_hook():
    with pytest.raises(UsageError, match="icarl and bic both replace train_data"):
        make_strategy("icarl+bic")
    with pytest.raises(UsageError, match="appears twice"):
        make_strategy("ewc+ewc")


def test_parameters_per_part_and_unprefixed_only_when_unambiguous():
    s = make_strategy("ewc+lwf", {"ewc.lam": 100, "lwf.lam": 1, "temperature": 3})
    assert (s.strategies[0].lam, s.strategies[1].lam, s.strategies[1].temperature) == (100.0, 1.0, 3.0)
    with pytest.raises(UsageError, match=r"write ewc.lam or lwf.lam"):
        make_strategy("ewc+lwf", {"lam": 10})
    assert make_strategy("er+ewc", {"lam": 10}).strategies[1].lam == 10.0  # only ewc has lam
    with pytest.raises(UsageError, match="'si' is not a part"):
        make_strategy("er+ewc", {"si.lam": 1})


def test_recorded_config_keeps_each_parts_values(one_thread):
    r = fl.run(RunConfig(**TINY), strategy=Compose([EWC(lam=1), LwF(lam=2)]))
    assert r.config["strategy"] == "ewc+lwf"
    assert r.config["params"]["ewc.lam"] == 1.0 and r.config["params"]["lwf.lam"] == 2.0
    again = fl.run(RunConfig(**{**TINY, "strategy": r.config["strategy"], "params": r.config["params"]}))
    assert again.accuracy_matrix == r.accuracy_matrix  # the record rebuilds the same run


def test_a_strategy_object_is_recorded_by_what_it_is(one_thread):
    assert fl.run(RunConfig(**TINY), strategy=Joint()).config["strategy"] == "joint"

    class Mine(fl.Strategy):
        params = {"k": 2}  # a plain default is accepted for a user's quick strategy

    r = fl.run(RunConfig(**TINY), strategy=Mine(k=3))
    assert r.config["strategy"] == "custom:Mine" and r.config["params"] == {"k": 3}
