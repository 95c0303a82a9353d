"""Bad inputs and the one-line error each gets (exit code 2). Used by tests/test_bad_inputs.py and
by tools/reliability_table.py, which writes docs/reliability.md from them.

Each case: (what, command-line arguments, a fragment the error line must contain). ``{mnist}``,
``{bad}`` (a folder of broken IDX files, built by :func:`make_places`) and ``{tmp}`` are filled in.
"""
import gzip
import shutil
from pathlib import Path

CASES = [
    ("unknown benchmark", ["run", "--benchmark", "split-mnsit"], "did you mean 'split-mnist'"),
    ("unknown strategy", ["run", "--strategy", "ewk"], "did you mean 'ewc'"),
    ("unknown strategy parameter", ["run", "--strategy", "ewc", "--param", "lamda=10"], "did you mean 'lam'"),
    ("parameter without a value", ["run", "--strategy", "ewc", "--param", "lam"], "KEY=VALUE"),
    ("parameter of the wrong type", ["run", "--strategy", "ewc", "--param", "lam=big"], "must be a number"),
    ("an unknown precision", ["run", "--precision", "fp8"], "invalid choice"),
    ("a device this machine lacks", ["run", "--device", "cuda:7"], "CUDA"),
    ("a misspelt device", ["run", "--device", "gpu"], "unknown device"),
    ("negative lambda", ["run", "--strategy", "ewc", "--param", "lam=-1"], "lam"),
    ("zero memory for a replay method", ["run", "--strategy", "er", "--param", "memory=0"], "memory"),
    ("more tasks than classes", ["run", "--benchmark", "split-digits", "--tasks", "11"], "cannot be split into 11 tasks"),
    ("classes that do not split evenly", ["run", "--benchmark", "split-digits", "--tasks", "3"], "do not split evenly"),
    ("an empty class group", ["run", "--benchmark", "split-digits", "--classes", "0,1||2,3"], "empty class group"),
    ("a class not in the dataset", ["run", "--benchmark", "split-digits", "--classes", "0,1|2,12"], "not in digits"),
    ("a class in two groups", ["run", "--benchmark", "split-digits", "--classes", "0,1|1,2"], "more than one group"),
    ("a malformed TOML config file", ["compare", "--config", "{tmp}/broken.toml"], "not valid TOML"),
    ("an unknown key in a config file", ["compare", "--config", "{tmp}/unknown.toml"], "unknown option 'benchmarc'"),
    ("a config file that does not exist", ["compare", "--config", "{tmp}/missing.toml"], "cannot read"),
    ("a truncated IDX file", ["run", "--benchmark", "split-mnist", "--no-download", "--data-dir", "{bad}/truncated"],
     "truncated"),
    ("an IDX file with the wrong magic number", ["run", "--benchmark", "split-mnist", "--no-download", "--data-dir",
                                                 "{bad}/magic"], "magic"),
    ("image and label counts that differ", ["run", "--benchmark", "split-mnist", "--no-download", "--data-dir",
                                            "{bad}/count"], "t10k-labels-idx1-ubyte.gz"),
    ("a data dir without the files (offline)", ["run", "--benchmark", "permuted-mnist", "--no-download",
                                                "--data-dir", "{tmp}/empty"], "train-images-idx3-ubyte.gz"),
    ("an output dir that is a file", ["run", "--out", "{tmp}/a-file"], "is a file"),
    ("a scenario the strategy does not support", ["run", "--benchmark", "split-digits", "--scenario", "task",
                                                  "--strategy", "icarl"], "does not support the task-incremental"),
    ("zero epochs", ["run", "--epochs", "0"], "--epochs must be an integer >= 1"),
    ("zero iterations", ["run", "--iterations", "0"], "--iterations must be an integer >= 1"),
    ("a negative learning rate", ["run", "--lr", "-0.1"], "--lr must be positive"),
    ("a zero batch size", ["run", "--batch-size", "0"], "--batch-size must be an integer >= 1"),
    ("a validation fraction of 1.5", ["run", "--val-fraction", "1.5"], "validation fraction"),
    ("an unknown scenario", ["run", "--scenario", "classes"], "invalid choice"),
    ("an unknown optimizer", ["run", "--optimizer", "rmsprop"], "invalid choice"),
    ("a non-integer task count", ["run", "--tasks", "five"], "invalid int value"),
    ("zero tasks", ["run", "--tasks", "0"], "at least 1"),
    ("angles that are not numbers", ["run", "--benchmark", "rotated-digits", "--angles", "0,ninety"], "comma-separated numbers"),
    ("one angle per task missing", ["run", "--benchmark", "rotated-digits", "--tasks", "3", "--angles", "0,90"],
     "one angle per task"),
    ("an unknown model", ["run", "--model", "resnet50"], "unknown model"),
    ("a ResNet width that is not positive", ["run", "--model", "resnet18:nf=0"], "positive integer"),
    ("an unknown augmentation", ["run", "--augment", "blur"], "invalid choice"),
    ("an unknown learning-rate schedule", ["run", "--lr-schedule", "step"], "invalid choice"),
    ("milestones that are not numbers", ["run", "--milestones", "5,x"], "increasing positive integers"),
    ("hidden widths that are not integers", ["run", "--model", "mlp:100,abc"], "hidden widths must be integers"),
    ("a data dir map with an unknown dataset", ["run", "--data-dir", "mnsit=/tmp"], "NAME=DIR"),
    ("zero threads", ["run", "--threads", "0"], "--threads must be at least 1"),
    ("zero grid workers", ["compare", "--workers", "0"], "--workers must be at least 1"),
    ("overrides without a config file", ["compare", "epochs=2"], "overrides apply on top of --config"),
    ("an unknown command", ["frobnicate"], "invalid choice"),
    ("two composed parts that both replace the prediction", ["run", "--benchmark", "split-digits", "--strategy",
                                                             "icarl+bic"], "cannot be composed"),
    ("an ambiguous parameter of a composed strategy", ["run", "--strategy", "ewc+lwf", "--param", "lam=10"],
     "write ewc.lam or lwf.lam"),
    ("a parameter for a part that is not composed", ["run", "--strategy", "ewc+lwf", "--param", "si.lam=1"],
     "'si' is not a part"),
    ("a parameter that would be ignored", ["run", "--strategy", "dgr", "--param", "temperature=3"],
     "no effect without distill=true"),
    ("online EWC's decay on plain EWC", ["run", "--strategy", "ewc", "--param", "gamma=0.5"], "unknown parameter 'gamma'"),
    ("a choice that does not exist", ["run", "--strategy", "ewc", "--param", "fisher=emprical"],
     "did you mean 'empirical'"),
    ("a finished run of another configuration in --out", ["run", "--quiet", "--tasks", "1", "--epochs", "1", "--model",
                                                          "mlp:8", "--lr", "0.01", "--out", "{tmp}/finished"],
     "holds a run with other settings (lr: 0.001 -> 0.01)"),
    ("a learning rate that makes training diverge", ["run", "--quiet", "--optimizer", "sgd", "--lr", "1e20", "--tasks", "1",
                                                     "--model", "mlp:32", "--out", "{tmp}/diverge"], "lower the learning rate"),
]


def make_places(tmp, mnist_dir) -> dict[str, str]:
    """Build the files the cases refer to under ``tmp`` (broken configs, a file where a directory
    should be, an empty data dir, three copies of the MNIST subset in ``mnist_dir`` with one broken
    IDX file each) and return the values for ``{tmp}``, ``{bad}`` and ``{mnist}``."""
    tmp, mnist_dir = Path(tmp), Path(mnist_dir)
    (tmp / "broken.toml").write_text("strategy = [\n")
    (tmp / "unknown.toml").write_text('benchmarc = "split-digits"\n')
    (tmp / "a-file").write_text("not a directory")
    (tmp / "empty").mkdir()
    from forgetless import RunConfig, run

    run(RunConfig(tasks=1, epochs=1, model="mlp:8"), out=tmp / "finished")  # a finished run, lr 0.001
    bad = tmp / "idx"
    for kind in ("truncated", "magic", "count"):
        (bad / kind).mkdir(parents=True)
        for f in mnist_dir.glob("*.gz"):
            shutil.copy(f, bad / kind / f.name)
    data = (bad / "truncated" / "train-images-idx3-ubyte.gz").read_bytes()
    raw = gzip.decompress(data)
    (bad / "truncated" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))
    (bad / "magic" / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(b"\x01\x02" + gzip.decompress((bad / "magic" / "train-labels-idx1-ubyte.gz").read_bytes())[2:]))
    labels = gzip.decompress((bad / "count" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    n = int.from_bytes(labels[4:8], "big") - 10
    (bad / "count" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels[:4] + n.to_bytes(4, "big") + labels[8:8 + n]))
    return {"tmp": str(tmp), "bad": str(bad), "mnist": str(mnist_dir)}
