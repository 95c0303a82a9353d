"""Security (issue 18): nothing forgetless loads can run code, nothing taken from an archive is
followed outside its folder, and the HTML report escapes every string from a config or a file.

- Checkpoints: ``torch.load(weights_only=True)`` after the SHA-256 check; a matching checksum is
  no licence (an attacker can write one too): a crafted pickle with a valid sidecar is still refused.
  Under torchrun every rank loads the checkpoint through the same ``load_checkpoint`` (DDP state).
- Every loader call in the source is checked statically: ``torch.load`` with ``weights_only=True``,
  ``np.load`` with ``allow_pickle=False`` (the cached arrays), no ``pickle.load``/``yaml.load``/
  ``tarfile.extractall``, Keras ``load_model`` only with ``safe_mode=True``.
- CIFAR archives are read member by member in memory, never extracted: members with ``..``,
  absolute names, symlinks and hard links are never written anywhere, and a data member that is a
  link is refused (crafted archives built from the real CIFAR-format test images).
- The report escapes markup in the run directory's path, a strategy parameter, the strategy and a
  custom model's name.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import pickle
import tarfile
from pathlib import Path

import pytest
import torch

import forgetless
from forgetless.checkpoint import CHECKPOINT, load_checkpoint, sidecar
from forgetless.errors import DataError, UsageError

SRC = Path(forgetless.__file__).resolve().parent


class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_with_a_valid_checksum_is_still_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / CHECKPOINT
    torch.save({"config": Evil(marker), "state": {"done": 1}}, path, pickle_module=pickle)
    sidecar(path).write_text(hashlib.sha256(path.read_bytes()).hexdigest() + f"  {CHECKPOINT}\n")
    with pytest.raises(UsageError, match="could run code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_resume_under_every_rank_goes_through_the_safe_loader(tmp_path, capsys):
    """`run --resume` (rank 0, and every other rank under torchrun) refuses the crafted checkpoint."""
    from forgetless.cli import main

    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--benchmark",
                "split-digits",
                "--tasks",
                "2",
                "--iterations",
                "3",
                "--model",
                "mlp:8",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    (out / "result.json").unlink()
    torch.save({"config": Evil(marker)}, out / CHECKPOINT, pickle_module=pickle)
    sidecar(out / CHECKPOINT).write_text(hashlib.sha256((out / CHECKPOINT).read_bytes()).hexdigest() + "\n")
    capsys.readouterr()
    assert (
        main(
            [
                "run",
                "--benchmark",
                "split-digits",
                "--tasks",
                "2",
                "--iterations",
                "3",
                "--model",
                "mlp:8",
                "--quiet",
                "--out",
                str(out),
                "--resume",
            ]
        )
        == 2
    )
    assert "could run code" in capsys.readouterr().err and not marker.exists()


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            yield owner, name, {k.arg: k.value for k in node.keywords}, node


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _is_false(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def test_every_loader_in_the_source_refuses_code():
    found, bad = {}, []
    for path in sorted(SRC.rglob("*.py")):
        for owner, name, kw, node in _calls(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(SRC)}:{node.lineno}"
            if owner == "torch" and name == "load":
                found.setdefault("torch.load", []).append(where)
                if not _is_true(kw.get("weights_only")):
                    bad.append(f"{where}: torch.load without weights_only=True")
            elif owner in ("np", "numpy") and name == "load":
                found.setdefault("np.load", []).append(where)
                if "allow_pickle" in kw and not _is_false(kw["allow_pickle"]):
                    bad.append(f"{where}: np.load with allow_pickle")
            elif owner in ("pickle", "cPickle", "dill", "marshal") and name in ("load", "loads"):
                bad.append(f"{where}: {owner}.{name}")
            elif owner == "yaml" and name in ("load", "unsafe_load", "full_load"):
                bad.append(f"{where}: yaml.{name} (use yaml.safe_load)")
            elif name in ("extractall", "extract") and owner not in ("", "self"):
                bad.append(f"{where}: {owner}.{name} writes archive members to disk")
            elif name == "load_model":
                found.setdefault("load_model", []).append(where)
                if not _is_true(kw.get("safe_mode")):
                    bad.append(f"{where}: load_model without safe_mode=True")
    assert not bad, bad
    assert found.get("torch.load"), "the checkpoint loader was not found: update this test"


# ---- archives ---------------------------------------------------------------------------------


def _cifar_members(n_train=50, n_test=10) -> dict[str, bytes]:
    """CIFAR-10 members built from the real MNIST subset (tests/cifar_archives.py)."""
    from cifar_archives import cifar10_archive

    folder = Path(__import__("tempfile").mkdtemp())
    cifar10_archive(folder, n_train, n_test)
    with tarfile.open(folder / "cifar-10-binary.tar.gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def _archive(path: Path, members: dict[str, bytes], links: dict[str, tuple[str, bytes]] | None = None) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        for name, (target, kind) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)


def _load(folder: Path):
    from forgetless.data.sources import load_dataset

    return load_dataset("cifar10", data_dir=folder, download=False)


def test_archive_members_outside_the_folder_are_never_written(tmp_path):
    members = _cifar_members()
    work = tmp_path / "deep" / "data"
    work.mkdir(parents=True)
    escape = tmp_path / "deep" / "escaped.txt"
    absolute = tmp_path / "absolute.txt"
    evil = {**members, "../escaped.txt": b"out", f"{absolute}": b"abs", "cifar-10-batches-bin/../../escaped.txt": b"x"}
    _archive(
        work / "cifar-10-binary.tar.gz",
        evil,
        links={
            "cifar-10-batches-bin/link": ("/etc/passwd", tarfile.SYMTYPE),
            "cifar-10-batches-bin/hard": ("/etc/passwd", tarfile.LNKTYPE),
        },
    )
    train, test = _load(work)
    assert len(train) == 50 and len(test) == 10  # the real members are read ...
    assert not escape.exists() and not absolute.exists()  # ... and nothing else is written anywhere
    assert sorted(p.name for p in work.iterdir()) == ["cifar-10-binary.tar.gz"]


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_a_data_member_that_is_a_link_is_refused(tmp_path, kind):
    members = _cifar_members()
    victim = tmp_path / "secret.bin"
    victim.write_bytes(b"\x01" + bytes(3072))  # a valid-looking record that must not be read through the link
    name = "cifar-10-batches-bin/test_batch.bin"
    del members[name]
    _archive(tmp_path / "cifar-10-binary.tar.gz", members, links={name: (str(victim), kind)})
    with pytest.raises(DataError, match=r"archive lacks cifar-10-batches-bin/test_batch.bin") as e:
        _load(tmp_path)
    assert "\n" not in str(e.value)


def test_an_archive_holding_a_pickle_is_only_bytes(tmp_path):
    """CIFAR records are parsed with np.frombuffer: a pickle in a member is a wrong size, not code."""
    members = _cifar_members()
    marker = tmp_path / "pwned"
    members["cifar-10-batches-bin/test_batch.bin"] = pickle.dumps(Evil(marker))
    _archive(tmp_path / "cifar-10-binary.tar.gz", members)
    with pytest.raises(DataError, match="truncated record"):
        _load(tmp_path)
    assert not marker.exists()


# ---- the HTML report escapes what comes from configs and files --------------------------------

MARKUP = "<script>alert('x')</script>"


def test_the_report_escapes_markup_in_paths_parameters_and_model_names(tmp_path):
    from forgetless import RunConfig, run
    from forgetless.report import write_report

    out = tmp_path / "<img src=x onerror=alert(1)>"
    run(RunConfig(benchmark="split-digits", tasks=2, iterations=3, model="mlp:8", strategy="ewc"), out=out)
    result = json.loads((out / "result.json").read_text())
    result["config"]["params"]["note"] = MARKUP
    result["config"]["model"] = "custom:<b onmouseover=alert(2)>Net</b>"
    result["config"]["strategy"] = "ewc<i>x</i>"
    (out / "result.json").write_text(json.dumps(result))
    page = write_report(out).read_text()
    low = page.lower()
    assert "<script" not in low and "<img src=x" not in low and "<b onmouseover" not in low and "<i>x</i>" not in low
    assert "&lt;script&gt;" in page and "&lt;b onmouseover=alert(2)&gt;" in page


def test_the_grid_report_escapes_markup_in_labels_and_parameters(tmp_path):
    from forgetless.experiment import Grid, compare
    from forgetless.report import write_report

    out = tmp_path / "grid"
    compare(
        Grid(
            base=dict(benchmark="split-digits", tasks=2, iterations=3, model="mlp:8"),
            axes={"strategy": ["naive", "er"]},
        ),
        out,
        threads=1,
    )
    rows = json.loads((out / "summary.json").read_text())
    rows[0]["label"], rows[0]["params"] = MARKUP, {"note": MARKUP}
    rows[1]["strategy"] = "<svg onload=alert(3)>"
    marked = "<img src=x onerror=alert(1)>"  # a run directory's path, shown in the report
    (out / rows[1]["runs"][0]).rename(out / marked)
    rows[1]["runs"] = [marked]
    (out / "summary.json").write_text(json.dumps(rows))
    page = write_report(out).read_text()
    low = page.lower()
    assert "<script" not in low and "<svg onload" not in low and "<img src=x" not in low
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;script&gt;" in page
