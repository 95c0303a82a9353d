import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# Shipped with the repository (tests/data/*/README.md says where each comes from): every test can use them.
MNIST_SUBSET = REPO / "tests" / "data" / "mnist-subset"  # 8,500 train / 1,500 test real MNIST digits
FASHION_SLICE = REPO / "tests" / "data" / "fashion-mnist-slice"  # 4,000 / 1,000 real Fashion-MNIST images
# The full Fashion-MNIST (60,000 / 10,000), only for the tests that need all of it. Debian's
# dataset-fashion-mnist installs it; FORGETLESS_TEST_FASHION_DIR points elsewhere (an empty folder shows
# what a machine without it skips).
FASHION = Path(os.environ.get("FORGETLESS_TEST_FASHION_DIR") or "/usr/share/datasets/fashion-mnist")
IDX_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


# The device every training test uses: CPU here, CUDA where present; FORGETLESS_TEST_DEVICE chooses
# (e.g. cpu on a GPU machine). It is also exported as FORGETLESS_DEVICE, which --device auto (the
# default of every RunConfig and of the CLI) follows, so runs a test starts, in-process or as a
# subprocess, land on the same device as the tensors a test builds with the ``device`` fixture.
from forgetless import devices as _devices  # noqa: E402
from forgetless.strategies.baselines import Naive  # noqa: E402

DEVICE = _devices.resolve(os.environ.get("FORGETLESS_TEST_DEVICE") or "auto")
os.environ["FORGETLESS_DEVICE"] = str(DEVICE)
if DEVICE.type == "cuda":
    # Full float32 in the tests' matrix products and convolutions (cuDNN takes TF32 for convolutions
    # by default on Ampere and later): the hand computations and loop oracles are compared with
    # tolerances chosen for IEEE float32, which TF32's 10-bit mantissa would exceed.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device of the test suite's training (see DEVICE above)."""
    return DEVICE


def _shipped(folder: Path) -> Path:
    missing = [f for f in IDX_FILES if not (folder / f).is_file()]
    if missing:
        pytest.fail(f"{folder} lacks {', '.join(missing)}: it is part of the repository (git checkout it)")
    return folder


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return _shipped(MNIST_SUBSET)


@pytest.fixture(scope="session")
def fashion_slice_dir() -> Path:
    return _shipped(FASHION_SLICE)


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """The full Fashion-MNIST: skipped where it is not installed, a failure in CI."""
    if not all((FASHION / f).is_file() for f in IDX_FILES):
        if os.environ.get("CI"):
            pytest.fail("CI must install dataset-fashion-mnist (.ci/run does)")
        pytest.skip(f"the full Fashion-MNIST is not in {FASHION} (apt-get install dataset-fashion-mnist)")
    return FASHION


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors gain nothing from threads, and on a busy 2-core machine OpenMP threads spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Crash(Naive):
    """Naive, but the process 'dies' (KeyboardInterrupt) when task ``at`` starts: resume tests."""

    def __init__(self, at=None):
        super().__init__()
        self.at = at

    def before_task(self, ctx, task):
        if task.id == self.at:
            raise KeyboardInterrupt
