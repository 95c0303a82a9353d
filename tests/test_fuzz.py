"""Hypothesis fuzzing (issue 18): the spec parsers, the grid-file loader (TOML, YAML, KEY=VALUE
overrides) and the checkpoint loader (random byte flips and truncations) either accept their input
or raise a one-line ``UsageError`` (``DataError`` is one): never another exception, never a hang
(every example has a deadline).

Example counts (kept modest for CI; ``EXAMPLES`` below): 300 per spec parser (6 parsers), 150 random
and 150 mutated TOML files, 150 YAML documents, 300 override strings, 100 flipped and 100 truncated
checkpoints with their checksum file, 100 damaged ones without it (torch's own parser sees them);
``FORGETLESS_FUZZ_SCALE=10`` multiplies them all.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import string
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from forgetless import spec
from forgetless.checkpoint import CHECKPOINT, load_checkpoint, sidecar
from forgetless.config import RunConfig, parse_params
from forgetless.errors import UsageError
from forgetless.experiment import load_grid_file
from forgetless.run import run

SCALE = float(os.environ.get("FORGETLESS_FUZZ_SCALE", "1"))  # e.g. 10 for a longer search than CI's
EXAMPLES = {
    k: max(1, int(n * SCALE))
    for k, n in {"spec": 300, "toml": 150, "yaml": 150, "override": 300, "checkpoint": 100}.items()
}
FUZZ = dict(
    deadline=datetime.timedelta(seconds=20),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

SPEC_CHARS = string.ascii_letters + string.digits + "+,|:=.-_ /;\t\n" + "é∞"
spec_text = st.text(alphabet=SPEC_CHARS, max_size=30)


def one_line(e: UsageError) -> None:
    text = str(e)
    assert text and "\n" not in text and "Traceback" not in text, text


def accepts_or_one_line(f, *args):
    try:
        return f(*args)
    except UsageError as e:
        one_line(e)
        return None


@settings(max_examples=EXAMPLES["spec"], **FUZZ)
@given(spec_text)
def test_strategy_specs(text):
    parts = accepts_or_one_line(spec.parse_strategy, text)
    if parts is not None:
        assert "+".join(parts) == text  # accepted exactly as typed, nothing stripped


@settings(max_examples=EXAMPLES["spec"], **FUZZ)
@given(
    st.one_of(
        spec_text, st.builds(lambda k, r: k + r, st.sampled_from(["mlp:", "resnet18:", "cnn", "keras:"]), spec_text)
    )
)
def test_model_specs(text):
    if accepts_or_one_line(spec.parse_model, text) is not None:
        assert text.strip() == text and ",," not in text


@settings(max_examples=EXAMPLES["spec"], **FUZZ)
@given(st.one_of(spec_text, st.text(alphabet="0123456789,| ", max_size=20)))
def test_class_specs(text):
    groups = accepts_or_one_line(spec.parse_classes, text)
    if groups is not None:  # accepted exactly as typed (numbers aside: 007 is 7)
        assert "|".join(",".join(map(str, g)) for g in groups) == re.sub(r"\d+", lambda m: str(int(m[0])), text)


@settings(max_examples=EXAMPLES["spec"], **FUZZ)
@given(st.one_of(spec_text, st.text(alphabet="0123456789.,-+eE naif", max_size=20)))
def test_angle_specs(text):
    angles = accepts_or_one_line(spec.parse_angles, text)
    if angles is not None:
        assert len(angles) == text.count(",") + 1 and all(a == a and abs(a) != float("inf") for a in angles)


@settings(max_examples=EXAMPLES["spec"], **FUZZ)
@given(
    st.one_of(
        spec_text, st.builds(lambda a, b: a + "=" + b, st.sampled_from(["mnist", "digits", "mnsit", ""]), spec_text)
    )
)
def test_data_dir_specs(text):
    accepts_or_one_line(spec.parse_data_dir, text)


@settings(max_examples=EXAMPLES["spec"], **FUZZ)
@given(st.lists(spec_text, max_size=3))
def test_param_items(items):
    params = accepts_or_one_line(parse_params, items)
    if params:
        assert all(spec.check_param_key(k) == k for k in params)


# ---- grid files --------------------------------------------------------------------------------


def _check_grid(path: Path, overrides=()) -> None:
    """Load and expand a grid file, resolving every config (what `compare` does before running)."""
    try:
        grid = load_grid_file(path, list(overrides))
        for c in grid.configs()[:20]:
            c.resolved()
    except UsageError as e:
        one_line(e)


VALID_TOML = """benchmark = "split-digits"
strategy = ["naive", "er+ewc"]
seed = [0, 1]
epochs = 2
model = "mlp:32"
classes = "0,1|2,3"
[params]
"ewc.lam" = [10, 100]
"""

toml_value = st.recursive(
    st.one_of(st.integers(-5, 5), st.floats(allow_nan=True), st.booleans(), st.text(SPEC_CHARS, max_size=12)),
    lambda children: st.lists(children, max_size=3),
    max_leaves=6,
)
option_name = st.one_of(
    st.sampled_from(
        [
            "benchmark",
            "strategy",
            "seed",
            "epochs",
            "model",
            "classes",
            "angles",
            "params",
            "lr",
            "data_dir",
            "tasks",
            "batch_size",
        ]
    ),
    st.text(string.ascii_lowercase + "_-.", min_size=1, max_size=10),
)


def _toml_literal(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v > 0 else "-inf") if abs(v) == float("inf") else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_literal(x) for x in v) + "]"
    return json.dumps(v)


@settings(max_examples=EXAMPLES["toml"], **FUZZ)
@given(st.dictionaries(option_name, toml_value, max_size=5))
def test_random_toml_grid_files(tmp_path_factory, table):
    path = tmp_path_factory.mktemp("toml") / "grid.toml"
    path.write_text("".join(f"{json.dumps(k)} = {_toml_literal(v)}\n" for k, v in table.items()))
    _check_grid(path)


@settings(max_examples=EXAMPLES["toml"], **FUZZ)
@given(
    st.lists(
        st.tuples(st.integers(0, len(VALID_TOML)), st.integers(0, 4), st.text(SPEC_CHARS + '"[]#', max_size=4)),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_toml_grid_files(tmp_path_factory, edits):
    text = VALID_TOML
    for at, cut, insert in edits:  # delete `cut` characters at `at`, insert `insert`
        text = text[:at] + insert + text[at + cut :]
    path = tmp_path_factory.mktemp("toml") / "grid.toml"
    path.write_text(text)
    _check_grid(path)


yaml_doc = st.recursive(
    st.one_of(st.none(), st.integers(-5, 5), st.floats(), st.booleans(), st.text(SPEC_CHARS, max_size=12)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(option_name, children, max_size=3)),
    max_leaves=8,
)


@settings(max_examples=EXAMPLES["yaml"], **FUZZ)
@given(st.one_of(yaml_doc, st.text(SPEC_CHARS + ":-[]{}&*!'\"", max_size=60)))
def test_yaml_grid_files(tmp_path_factory, doc):
    yaml = pytest.importorskip("yaml")
    path = tmp_path_factory.mktemp("yaml") / "grid.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    _check_grid(path)


@settings(max_examples=EXAMPLES["override"], **FUZZ)
@given(st.lists(st.one_of(spec_text, st.builds(lambda k, v: k + "=" + v, option_name, spec_text)), max_size=3))
def test_key_value_overrides(tmp_path_factory, overrides):
    path = tmp_path_factory.mktemp("ovr") / "grid.toml"
    path.write_text('strategy = "ewc"\nepochs = 1\n')
    _check_grid(path, overrides)


# ---- the checkpoint loader ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ck")
    run(RunConfig(benchmark="split-digits", tasks=2, iterations=3, model="mlp:8", strategy="er"), out=out)
    return (out / CHECKPOINT).read_bytes(), sidecar(out / CHECKPOINT).read_text()


def _load(tmp_path_factory, blob: bytes, side: str | None):
    where = tmp_path_factory.mktemp("load") / CHECKPOINT
    where.write_bytes(blob)
    if side is not None:
        sidecar(where).write_text(side)
    try:
        return load_checkpoint(where, quiet=True)
    except UsageError as e:
        one_line(e)
        return None


flips = st.lists(st.tuples(st.integers(0, 10**9), st.integers(1, 255)), min_size=1, max_size=4)


def _flip(blob: bytes, edits) -> bytes:
    data = bytearray(blob)
    for at, x in edits:
        data[at % len(data)] ^= x
    return bytes(data)


@settings(max_examples=EXAMPLES["checkpoint"], **FUZZ)
@given(flips)
def test_flipped_checkpoints_are_refused_by_their_checksum(tmp_path_factory, checkpoint, edits):
    blob, side = checkpoint
    changed = _flip(blob, edits)
    assert _load(tmp_path_factory, changed, side) is None or changed == blob


@settings(max_examples=EXAMPLES["checkpoint"], **FUZZ)
@given(st.integers(0, 10**9))
def test_truncated_checkpoints_are_refused(tmp_path_factory, checkpoint, cut):
    blob, side = checkpoint
    assert _load(tmp_path_factory, blob[: cut % len(blob)], side) is None


@settings(max_examples=EXAMPLES["checkpoint"], **FUZZ)
@given(st.one_of(flips.map(lambda e: ("flip", e)), st.integers(0, 10**9).map(lambda c: ("cut", c))))
def test_damaged_checkpoints_without_a_checksum_only_give_one_line_errors(tmp_path_factory, checkpoint, damage):
    """No sidecar (a checkpoint from before checksums): torch.load(weights_only=True) parses the damaged
    bytes; whatever it meets becomes a warning (None) or a one-line error, never another exception."""
    blob, _ = checkpoint
    kind, arg = damage
    changed = _flip(blob, arg) if kind == "flip" else blob[: arg % len(blob)]
    got = _load(tmp_path_factory, changed, None)
    assert got is None or isinstance(got, dict)


def test_the_intact_checkpoint_loads(tmp_path_factory, checkpoint):
    blob, side = checkpoint
    got = _load(tmp_path_factory, blob, side)
    assert got["state"]["done"] == 2 and torch.is_tensor(next(iter(got["model"].values())))
