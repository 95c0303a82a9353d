"""forgetless: continual learning in PyTorch — train on a sequence of tasks, measure forgetting, fight it."""
__version__ = "0.1.0"

from . import metrics  # noqa: E402
from .benchmarks import Benchmark, Task, benchmark_names, build  # noqa: E402
from .config import RunConfig  # noqa: E402
from .errors import UsageError  # noqa: E402
from .loop import evaluate, train_step, train_task  # noqa: E402
from .models import build_model  # noqa: E402
from .results import Result, save_result  # noqa: E402
from .run import run  # noqa: E402
from .strategies import STRATEGIES, Batch, Compose, Context, Param, Strategy, make_strategy  # noqa: E402

__all__ = ["Batch", "Benchmark", "Compose", "Param", "Context", "Result", "RunConfig", "STRATEGIES", "Strategy", "Task",
           "UsageError", "benchmark_names", "build", "build_model", "evaluate", "make_strategy", "metrics",
           "run", "save_result", "train_step", "train_task"]
