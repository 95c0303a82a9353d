"""Property tests (hypothesis): the IDX parser, option parsing and the metrics.

Example counts are bounded so the file runs in a few seconds; ``record`` keeps how many examples
each property saw (see tests/test_kill_resume.py).
"""

from __future__ import annotations

import copy
import gzip
import math
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from test_kill_resume import record

from forgetless import metrics as M
from forgetless.config import parse_params, parse_value
from forgetless.data import read_idx, write_idx
from forgetless.errors import DataError, UsageError

# 60 examples each keeps the file at a few seconds; FORGETLESS_PROPERTY_EXAMPLES=5000 searches harder.
FAST = settings(
    max_examples=int(os.environ.get("FORGETLESS_PROPERTY_EXAMPLES", 60)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
EXAMPLES: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def keep_counts():
    yield
    record("properties", dict(EXAMPLES))


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory(prefix="forgetless-props-") as d:
        yield Path(d)


# ---- IDX ---------------------------------------------------------------------------------------

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6)
arrays = st.sampled_from(DTYPES).flatmap(lambda dt: hnp.arrays(dt, shapes))


def idx_bytes(a: np.ndarray) -> bytes:
    """What write_idx writes, uncompressed."""
    path = Path(tempfile.mkdtemp(prefix="forgetless-idx-")) / "a.idx"
    write_idx(path, a)
    blob = path.read_bytes()
    path.unlink()
    path.parent.rmdir()
    return blob


def read_must_fail(path: Path) -> DataError:
    try:
        got = read_idx(path)
    except DataError as e:
        assert str(path) in str(e) and "\n" not in str(e), str(e)
        return e
    raise AssertionError(f"read_idx returned data of shape {got.shape} from a damaged file")


@FAST
@given(a=arrays, gz=st.booleans())
def test_idx_round_trip(scratch, a, gz):
    EXAMPLES["idx round trip"] += 1
    path = scratch / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, a)
    b = read_idx(path)
    assert b.dtype == a.dtype and b.shape == a.shape
    assert b.tobytes() == a.tobytes()  # bit for bit (NaN and -0.0 included)
    assert b.flags.writeable


@FAST
@given(a=arrays, gz=st.booleans(), data=st.data())
def test_every_truncation_raises_a_data_error_naming_the_file(scratch, a, gz, data):
    EXAMPLES["idx truncation"] += 1
    blob = idx_bytes(a)
    if gz:
        blob = gzip.compress(blob, mtime=0)
    cut = data.draw(st.integers(0, len(blob) - 1), label="cut")
    path = scratch / ("cut.idx.gz" if gz else "cut.idx")
    path.write_bytes(blob[:cut])
    read_must_fail(path)


@FAST
@given(a=arrays, data=st.data())
def test_header_byte_flips_give_data_or_a_data_error(scratch, a, data):
    EXAMPLES["idx header flips"] += 1
    blob = bytearray(idx_bytes(a))
    header = 4 + 4 * a.ndim
    for pos in data.draw(st.lists(st.integers(0, header - 1), min_size=1, max_size=4), label="positions"):
        blob[pos] ^= data.draw(st.integers(1, 255), label="xor")
    path = scratch / "flipped.idx"
    path.write_bytes(bytes(blob))
    try:
        got = read_idx(path)
    except DataError as e:
        assert str(path) in str(e) and "\n" not in str(e)
    else:  # a flip that still describes this many bytes, e.g. a swapped pair of dimensions
        assert got.nbytes == len(blob) - (4 + 4 * blob[3])


@FAST
@given(a=arrays, data=st.data())
def test_gzip_byte_flips_give_data_or_a_data_error(scratch, a, data):
    EXAMPLES["gzip flips"] += 1
    blob = bytearray(gzip.compress(idx_bytes(a), mtime=0))
    for pos in data.draw(st.lists(st.integers(0, len(blob) - 1), min_size=1, max_size=3), label="positions"):
        blob[pos] ^= data.draw(st.integers(1, 255), label="xor")
    path = scratch / "flipped.idx.gz"
    path.write_bytes(bytes(blob))
    try:
        read_idx(path)
    except DataError as e:
        assert str(path) in str(e) and "\n" not in str(e)


# ---- options -----------------------------------------------------------------------------------

scalars = st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.booleans())


@FAST
@given(v=scalars)
def test_parse_value_round_trips_ints_floats_and_bools(v):
    EXAMPLES["parse_value"] += 1
    if isinstance(v, float) and not math.isfinite(v):  # (issue 18: strict values: no inf, no nan)
        with pytest.raises(UsageError, match="finite"):
            parse_value(str(v))
        return
    got = parse_value(str(v))
    assert type(got) is type(v)
    assert got == v


KEYWORDS = {"true", "yes", "on", "false", "no", "off", "none", "null"}


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


words = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.:=-]{0,12}", fullmatch=True).filter(
    lambda s: s.lower() not in KEYWORDS and not _is_number(s)
)
keys = st.from_regex(r"([a-z][a-z0-9-]{0,5}\.)?[a-z_][a-z0-9_]{0,8}", fullmatch=True)  # (issue 18: NAME or PART.NAME)
values = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none(), words)


@FAST
@given(items=st.lists(st.tuples(keys, values, st.sampled_from(["", " "])), max_size=6, unique_by=lambda t: t[0]))
def test_parse_params_of_key_value_lists(items):
    EXAMPLES["parse_params"] += 1
    texts = [f"{pad}{k}{pad}={v}" for k, v, pad in items]
    if any(pad for _, _, pad in items):  # (issue 18: spaces around a key are refused, not stripped)
        with pytest.raises(UsageError, match=r"NAME or PART.NAME"):
            parse_params(texts)
        return
    expected = {k: v for k, v, _ in items}
    got = parse_params(texts)
    assert got == expected
    assert all(type(got[k]) is type(v) for k, v in expected.items())  # 1 == True, but not the same


@FAST
@given(item=st.one_of(st.from_regex(r"[^=]*", fullmatch=True), st.from_regex(r"\s*=.*", fullmatch=True)))
def test_parse_params_refuses_items_without_a_key_or_a_value(item):
    EXAMPLES["parse_params refusals"] += 1
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_params([item])


# ---- metrics -----------------------------------------------------------------------------------

acc = st.floats(0, 1)
sizes = st.integers(1, 6)
matrices = sizes.flatmap(lambda T: hnp.arrays(np.float64, (T, T), elements=acc))


def constant_below_diagonal(R: np.ndarray) -> np.ndarray:
    """R with every column constant from the diagonal down: nothing is forgotten or gained."""
    R = R.copy()
    for j in range(len(R)):
        R[j:, j] = R[j, j]
    return R


@FAST
@given(R=matrices)
def test_columns_constant_from_the_diagonal_down(R):
    EXAMPLES["metrics: constant columns"] += 1
    R = constant_below_diagonal(R)
    T = len(R)
    if T == 1:
        assert M.backward_transfer(R) is None and M.forgetting(R) is None
        return
    assert M.backward_transfer(R) == 0.0
    # forgetting's max runs over every earlier row, those before task j was learned too
    # (Chaudhry et al. 2018), so it is 0 exactly when no accuracy above the diagonal beats it:
    gain_before = [max(0.0, float(R[:j, j].max()) - R[j, j]) if j else 0.0 for j in range(T - 1)]
    assert M.forgetting(R) == pytest.approx(float(np.mean(gain_before)), abs=1e-12)
    capped = R.copy()
    for j in range(T):
        capped[:j, j] = np.minimum(capped[:j, j], capped[j, j])
    assert M.forgetting(capped) == 0.0


def test_forgetting_counts_accuracy_before_a_task_was_learned():
    # task 2 (column 1) is at 0.9 before it is trained, then 0.5 for good: forgetting 0.4 / 2
    R = [[0.5, 0.9, 0.1], [0.5, 0.5, 0.1], [0.5, 0.5, 0.8]]
    assert M.backward_transfer(R) == 0.0
    assert M.forgetting(R) == pytest.approx(0.2)


@FAST
@given(R=matrices)
def test_forgetting_is_at_least_minus_bwt(R):
    EXAMPLES["metrics: forgetting >= -BWT"] += 1
    assume(len(R) > 1)
    assert M.forgetting(R) >= -M.backward_transfer(R) - 1e-12


@FAST
@given(R=matrices)
def test_forgetting_is_not_negative_when_no_final_accuracy_beats_its_diagonal(R):
    EXAMPLES["metrics: forgetting >= 0"] += 1
    assume(len(R) > 1)
    T = len(R)
    for j in range(T - 1):
        R[-1, j] = min(R[-1, j], R[j, j])
    assert M.forgetting(R) >= 0.0


def test_forgetting_is_negative_when_a_final_accuracy_beats_every_earlier_one():
    assert M.forgetting([[0.5, 0.0], [0.7, 0.9]]) == pytest.approx(-0.2)


@FAST
@given(R=matrices)
def test_average_accuracy_is_a_fraction(R):
    EXAMPLES["metrics: average accuracy"] += 1
    assert 0.0 <= M.average_accuracy(R) <= 1.0
    assert all(0.0 <= a <= 1.0 for a in M.average_accuracies(R))


@FAST
@given(R=matrices, data=st.data(), as_list=st.booleans())
def test_metrics_never_modify_their_input(R, data, as_list):
    EXAMPLES["metrics: inputs untouched"] += 1
    T = len(R)
    b = data.draw(hnp.arrays(np.float64, (T,), elements=acc), label="b")
    ref = data.draw(hnp.arrays(np.float64, (T,), elements=acc), label="reference")
    args = (R.tolist(), b.tolist(), ref.tolist()) if as_list else (R, b, ref)
    before = copy.deepcopy(args)
    M.all_metrics(*args)
    for f in (M.average_accuracies, M.backward_transfer, M.forgetting_per_task, M.forgetting, M.learning_accuracy):
        f(args[0])
    M.forward_transfer(args[0], args[1])
    M.intransigence(args[0], args[2])
    for now, then in zip(args, before):
        if as_list:
            assert now == then
        else:
            assert now.tobytes() == then.tobytes()


@FAST
@given(R=matrices, data=st.data())
def test_fwt_is_zero_when_the_upper_triangle_is_the_initial_accuracy(R, data):
    EXAMPLES["metrics: FWT"] += 1
    T = len(R)
    b = data.draw(hnp.arrays(np.float64, (T,), elements=acc), label="b")
    for j in range(T):
        R[:j, j] = b[j]
    assert M.forward_transfer(R, b) == (None if T == 1 else 0.0)


def test_idx_header_with_an_impossible_shape_is_a_data_error(scratch):
    # found by test_header_byte_flips_...: no data, but dimensions numpy cannot even describe
    path = scratch / "impossible.idx"
    path.write_bytes(bytes([0, 0, 8, 3]) + np.array([2**32 - 1, 0, 2**32 - 1], ">u4").tobytes())
    assert "impossible shape" in str(read_must_fail(path))
    # dimensions whose product overflows int64: the size is computed exactly, not wrapped around
    path.write_bytes(bytes([0, 0, 8, 2]) + np.array([2**32 - 1, 2**32 - 1], ">u4").tobytes() + b"\0" * 7)
    assert f"expected {(2**32 - 1) ** 2} bytes of data, found 7" in str(read_must_fail(path))
