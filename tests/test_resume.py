import json
import pickle

import pytest
import torch
from conftest import Crash

import forgetless as fl
from forgetless.checkpoint import CHECKPOINT, load_checkpoint


def cfg(**kw):
    base = dict(benchmark="permuted-digits", tasks=3, model="mlp:64", epochs=2, batch_size=64, seed=5)
    base.update(kw)
    return fl.RunConfig(**base)


@pytest.mark.parametrize("at", [1, 2])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, at):
    full = fl.run(cfg(optimizer="sgd", momentum=0.9), strategy=Crash(None), out=tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        fl.run(cfg(optimizer="sgd", momentum=0.9), strategy=Crash(at), out=tmp_path / "cut")
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT)["state"]["done"] == at
    resumed = fl.run(cfg(optimizer="sgd", momentum=0.9), strategy=Crash(None), out=tmp_path / "cut", resume=True)
    assert resumed.config["strategy"] == "custom:Crash"  # recorded by what it is
    assert resumed.accuracy_matrix == full.accuracy_matrix
    assert resumed.initial_accuracy == full.initial_accuracy
    assert resumed.metrics == full.metrics


def test_resume_refuses_another_config(tmp_path):
    fl.run(cfg(tasks=2), out=tmp_path)
    with pytest.raises(fl.UsageError, match=r"other settings \(lr: 0.001 -> 0.5\).*--overwrite"):
        fl.run(cfg(tasks=2, lr=0.5), out=tmp_path, resume=True)


def test_a_finished_run_of_another_config_is_never_replaced_silently(tmp_path):
    first = fl.run(cfg(tasks=2), out=tmp_path)
    before = (tmp_path / "result.json").read_text()
    with pytest.raises(fl.UsageError, match=r"params.lam: None -> 10.0|strategy: 'naive' -> 'ewc'"):
        fl.run(cfg(tasks=2, strategy="ewc"), out=tmp_path)
    assert (tmp_path / "result.json").read_text() == before  # nothing was touched
    again = fl.run(cfg(tasks=2), out=tmp_path)  # the same config may run again in place
    assert again.accuracy_matrix == first.accuracy_matrix
    replaced = fl.run(cfg(tasks=2, strategy="ewc"), out=tmp_path, overwrite=True)
    stored = json.loads((tmp_path / "result.json").read_text())
    assert stored["config"]["strategy"] == "ewc" and replaced.config["strategy"] == "ewc"


def test_truncated_checkpoint_is_ignored(tmp_path, capsys):
    fl.run(cfg(tasks=2), out=tmp_path)
    path = tmp_path / CHECKPOINT
    path.write_bytes(path.read_bytes()[:1000])
    assert load_checkpoint(path) is None
    assert "ignoring unreadable checkpoint" in capsys.readouterr().err
    again = fl.run(cfg(tasks=2), out=tmp_path, resume=True)  # starts over
    assert len(again.accuracy_matrix) == 2


class Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/forgetless-pwned",))


def test_malicious_checkpoint_cannot_run_code(tmp_path):
    import pathlib

    marker = pathlib.Path("/tmp/forgetless-pwned")
    marker.unlink(missing_ok=True)
    path = tmp_path / CHECKPOINT
    torch.save({"config": Evil()}, path, pickle_module=pickle)
    with pytest.raises(fl.UsageError, match="could run code"):
        load_checkpoint(path)
    assert not marker.exists()
