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
    (
        "more tasks than classes",
        ["run", "--benchmark", "split-digits", "--tasks", "11"],
        "cannot be split into 11 tasks",
    ),
    ("classes that do not split evenly", ["run", "--benchmark", "split-digits", "--tasks", "3"], "do not split evenly"),
    ("an empty class group", ["run", "--benchmark", "split-digits", "--classes", "0,1||2,3"], "empty class group"),
    ("a class not in the dataset", ["run", "--benchmark", "split-digits", "--classes", "0,1|2,12"], "not in digits"),
    ("a class in two groups", ["run", "--benchmark", "split-digits", "--classes", "0,1|1,2"], "more than one group"),
    ("a malformed TOML config file", ["compare", "--config", "{tmp}/broken.toml"], "not valid TOML"),
    ("an unknown key in a config file", ["compare", "--config", "{tmp}/unknown.toml"], "unknown option 'benchmarc'"),
    ("a config file that does not exist", ["compare", "--config", "{tmp}/missing.toml"], "cannot read"),
    (
        "a truncated IDX file",
        ["run", "--benchmark", "split-mnist", "--no-download", "--data-dir", "{bad}/truncated"],
        "truncated",
    ),
    (
        "an IDX file with the wrong magic number",
        ["run", "--benchmark", "split-mnist", "--no-download", "--data-dir", "{bad}/magic"],
        "magic",
    ),
    (
        "image and label counts that differ",
        ["run", "--benchmark", "split-mnist", "--no-download", "--data-dir", "{bad}/count"],
        "t10k-labels-idx1-ubyte.gz",
    ),
    (
        "a data dir without the files (offline)",
        ["run", "--benchmark", "permuted-mnist", "--no-download", "--data-dir", "{tmp}/empty"],
        "train-images-idx3-ubyte.gz",
    ),
    ("an output dir that is a file", ["run", "--out", "{tmp}/a-file"], "is a file"),
    (
        "a scenario the strategy does not support",
        ["run", "--benchmark", "split-digits", "--scenario", "task", "--strategy", "icarl"],
        "does not support the task-incremental",
    ),
    ("zero epochs", ["run", "--epochs", "0"], "--epochs must be an integer >= 1"),
    ("zero iterations", ["run", "--iterations", "0"], "--iterations must be an integer >= 1"),
    ("a negative learning rate", ["run", "--lr", "-0.1"], "--lr must be positive"),
    ("a zero batch size", ["run", "--batch-size", "0"], "--batch-size must be an integer >= 1"),
    ("a validation fraction of 1.5", ["run", "--val-fraction", "1.5"], "validation fraction"),
    ("an unknown scenario", ["run", "--scenario", "classes"], "invalid choice"),
    ("an unknown optimizer", ["run", "--optimizer", "rmsprop"], "invalid choice"),
    ("a non-integer task count", ["run", "--tasks", "five"], "invalid int value"),
    ("zero tasks", ["run", "--tasks", "0"], "at least 1"),
    (
        "angles that are not numbers",
        ["run", "--benchmark", "rotated-digits", "--angles", "0,ninety"],
        "comma-separated numbers",
    ),
    (
        "one angle per task missing",
        ["run", "--benchmark", "rotated-digits", "--tasks", "3", "--angles", "0,90"],
        "one angle per task",
    ),
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
    (
        "two composed parts that both replace the prediction",
        ["run", "--benchmark", "split-digits", "--strategy", "icarl+bic"],
        "cannot be composed",
    ),
    (
        "an ambiguous parameter of a composed strategy",
        ["run", "--strategy", "ewc+lwf", "--param", "lam=10"],
        "write ewc.lam or lwf.lam",
    ),
    (
        "a parameter for a part that is not composed",
        ["run", "--strategy", "ewc+lwf", "--param", "si.lam=1"],
        "'si' is not a part",
    ),
    (
        "a parameter that would be ignored",
        ["run", "--strategy", "dgr", "--param", "temperature=3"],
        "no effect without distill=true",
    ),
    (
        "online EWC's decay on plain EWC",
        ["run", "--strategy", "ewc", "--param", "gamma=0.5"],
        "unknown parameter 'gamma'",
    ),
    (
        "a choice that does not exist",
        ["run", "--strategy", "ewc", "--param", "fisher=emprical"],
        "did you mean 'empirical'",
    ),
    (
        "a finished run of another configuration in --out",
        [
            "run",
            "--quiet",
            "--tasks",
            "1",
            "--epochs",
            "1",
            "--model",
            "mlp:8",
            "--lr",
            "0.01",
            "--out",
            "{tmp}/finished",
        ],
        "holds a run with other settings (lr: 0.001 -> 0.01)",
    ),
    (
        "a learning rate that makes training diverge",
        [
            "run",
            "--quiet",
            "--optimizer",
            "sgd",
            "--lr",
            "1e20",
            "--tasks",
            "1",
            "--model",
            "mlp:32",
            "--out",
            "{tmp}/diverge",
        ],
        "lower the learning rate",
    ),
    # issue 18: one strict grammar per spec (src/forgetless/spec.py): every malformed form is refused
    ("a doubled '+' in a composition", ["run", "--strategy", "ewc++lwf"], "did you mean 'ewc+lwf'"),
    ("a trailing '+' in a composition", ["run", "--strategy", "ewc+"], "did you mean 'ewc'"),
    ("spaces in a composition", ["run", "--strategy", "er + ewc"], "did you mean 'er+ewc'"),
    ("a trailing space after a strategy", ["run", "--strategy", "ewc "], "has spaces"),
    ("an upper-case strategy name", ["run", "--strategy", "EWC"], "did you mean 'ewc'"),
    ("strategies joined by a comma", ["run", "--strategy", "ewc,lwf"], "did you mean 'ewc+lwf'"),
    ("a strategy composed with itself", ["run", "--strategy", "ewc+ewc"], "a strategy appears twice"),
    ("an empty strategy", ["run", "--strategy", ""], "give a strategy name"),
    ("an empty hidden width", ["run", "--model", "mlp:100,,100"], "did you mean 'mlp:100,100'"),
    ("a hidden width with a unit", ["run", "--model", "mlp:100x"], "did you mean 'mlp:100'"),
    ("a trailing comma in the widths", ["run", "--model", "mlp:100,"], "did you mean 'mlp:100'"),
    ("a space in a model spec", ["run", "--model", "mlp: 100"], "did you mean 'mlp:100'"),
    ("options for the cnn", ["run", "--model", "cnn:3"], "cnn takes no options"),
    ("a ResNet spec with a stray part", ["run", "--model", "resnet18:nf=8:x"], "did you mean 'resnet18:nf=8'"),
    ("a misspelt model kind", ["run", "--model", "mpl:100"], "did you mean 'mlp:100'"),
    ("a Keras spec without a function", ["run", "--model", "keras:"], "keras:package.module:function"),
    ("an empty model", ["run", "--model", ""], "unknown model ''"),
    ("a trailing empty class group", ["run", "--benchmark", "split-digits", "--classes", "0,1|"], "empty class group"),
    (
        "a trailing space after the classes",
        ["run", "--benchmark", "split-digits", "--classes", "0,1|2,3 "],
        "did you mean '0,1|2,3'",
    ),
    ("an empty class number", ["run", "--benchmark", "split-digits", "--classes", "0,,1|2,3"], "empty class number"),
    (
        "classes separated by semicolons",
        ["run", "--benchmark", "split-digits", "--classes", "0;1|2,3"],
        "not a class number",
    ),
    ("an angle that is a word", ["run", "--benchmark", "rotated-digits", "--angles", "10,abc"], "'abc', not a number"),
    ("an empty angle", ["run", "--benchmark", "rotated-digits", "--angles", "10,,20"], "did you mean '10,20'"),
    ("an angle that is not finite", ["run", "--benchmark", "rotated-digits", "--angles", "0,nan"], "not a number"),
    ("a parameter with half an exponent", ["run", "--strategy", "ewc", "--param", "lam=1e"], "did you mean '1e0'"),
    ("a parameter with two '='", ["run", "--strategy", "ewc", "--param", "lam==3"], "starts with '='"),
    ("a parameter with an empty value", ["run", "--strategy", "ewc", "--param", "lam="], "the value is empty"),
    ("a parameter value with a trailing space", ["run", "--strategy", "ewc", "--param", "lam=3 "], "did you mean '3'"),
    ("a parameter that is not finite", ["run", "--strategy", "ewc", "--param", "lam=nan"], "not a finite number"),
    ("a parameter that is infinite", ["run", "--strategy", "ewc", "--param", "lam=inf"], "not a finite number"),
    ("a number with two points", ["run", "--strategy", "ewc", "--param", "lam=1.2.3"], "is not a number"),
    ("a parameter key with two dots", ["run", "--strategy", "ewc", "--param", "ewc..lam=3"], "did you mean 'ewc.lam'"),
    ("a parameter key with a space", ["run", "--strategy", "ewc", "--param", "la m=3"], "write NAME or PART.NAME"),
    ("a parameter given twice", ["run", "--strategy", "ewc", "--param", "lam=1", "--param", "lam=2"], "given twice"),
    ("a data dir map without a folder", ["run", "--data-dir", "mnist="], "no folder for 'mnist'"),
    ("a dataset twice in a data dir map", ["run", "--data-dir", "mnist=/a,mnist=/b"], "'mnist' twice"),
    ("a misspelt dataset in a data dir map", ["run", "--data-dir", "mnsit=/tmp"], "did you mean 'mnist=/tmp'"),
    ("a data dir with a leading space", ["run", "--data-dir", " /tmp"], "has spaces around it"),
    ("an empty data dir", ["run", "--data-dir", ""], "give a folder"),
    ("an empty TOML grid file", ["compare", "--config", "{tmp}/empty.toml"], "is empty"),
    ("an empty YAML grid file", ["compare", "--config", "{tmp}/empty.yaml"], "is empty"),
    ("a grid file with only comments", ["compare", "--config", "{tmp}/comments.toml"], "is empty"),
    ("a grid axis with no values", ["compare", "--config", "{tmp}/no-values.toml"], "empty list"),
    ("grid params that are not a table", ["compare", "--config", "{tmp}/params-list.toml"], "params must be a table"),
    ("a grid option spelt with a dash", ["compare", "--config", "{tmp}/dash.toml"], "did you mean 'batch_size'"),
    (
        "a malformed composition in a grid file",
        ["compare", "--config", "{tmp}/bad-strategy.toml"],
        "did you mean 'er+ewc'",
    ),
    ("a grid file whose top level is a list", ["compare", "--config", "{tmp}/list.yaml"], "top level must be a table"),
    ("a grid file with another suffix", ["compare", "--config", "{tmp}/grid.ini"], "use a .toml or .yaml file"),
    (
        "an override of something that is not an option",
        ["compare", "--config", "{tmp}/ok.toml", "epochs.x=3"],
        "is not an option",
    ),
    ("an override with two '='", ["compare", "--config", "{tmp}/ok.toml", "epochs==2"], "starts with '='"),
    (
        "an override with half an exponent",
        ["compare", "--config", "{tmp}/ok.toml", "params.lam=1e"],
        "did you mean '1e0'",
    ),
    ("an override without a value", ["compare", "--config", "{tmp}/ok.toml", "epochs"], "write KEY=VALUE"),
    # issue 18: never overwrite a file forgetless did not write
    ("a log.csv of the user's in --out", ["run", "--out", "{tmp}/foreign-run"], "log.csv exists and was not written"),
    (
        "a result.json of the user's in --out",
        ["run", "--out", "{tmp}/foreign-result"],
        "result.json exists and was not written",
    ),
    (
        "a summary.csv of the user's in compare --out",
        ["compare", "--out", "{tmp}/foreign-grid"],
        "summary.csv exists and was not written",
    ),
    (
        "a report --out that is the user's page",
        ["report", "{tmp}/finished", "--out", "{tmp}/page.html"],
        "page.html exists and was not written",
    ),
    (
        "a figure of the user's in report --figures",
        ["report", "{tmp}/finished", "--out", "{tmp}/r.html", "--figures", "{tmp}/figs"],
        "matrix.png exists and was not written",
    ),
    (
        "a worker start method that does not exist",
        ["compare", "--quiet", "--workers", "2", "--tasks", "1", "--model", "mlp:8", "--out", "{tmp}/start"],
        "FORGETLESS_START_METHOD",
    ),
]

ENV = {"a worker start method that does not exist": {"FORGETLESS_START_METHOD": "teleport"}}  # extra environment


def make_places(tmp, mnist_dir) -> dict[str, str]:
    """Build the files the cases refer to under ``tmp`` (broken configs, a file where a directory
    should be, an empty data dir, three copies of the MNIST subset in ``mnist_dir`` with one broken
    IDX file each) and return the values for ``{tmp}``, ``{bad}`` and ``{mnist}``."""
    tmp, mnist_dir = Path(tmp), Path(mnist_dir)
    (tmp / "broken.toml").write_text("strategy = [\n")
    (tmp / "unknown.toml").write_text('benchmarc = "split-digits"\n')
    (tmp / "a-file").write_text("not a directory")
    (tmp / "empty").mkdir()
    (tmp / "empty.toml").write_text("")
    (tmp / "empty.yaml").write_text("")
    (tmp / "comments.toml").write_text("# strategy = ['er']\n")
    (tmp / "no-values.toml").write_text("strategy = []\n")
    (tmp / "params-list.toml").write_text("params = [1, 2]\n")
    (tmp / "dash.toml").write_text("batch-size = 32\n")
    (tmp / "bad-strategy.toml").write_text('strategy = "er++ewc"\n')
    (tmp / "list.yaml").write_text("- strategy: er\n")
    (tmp / "grid.ini").write_text("[grid]\n")
    (tmp / "ok.toml").write_text('strategy = "ewc"\n')
    for name, files in (
        ("foreign-run", {"log.csv": "my notes\n"}),
        ("foreign-result", {"result.json": '{"mine": true}'}),
        ("foreign-grid", {"summary.csv": "my table\n"}),
        ("figs", {"matrix.png": "my picture"}),
    ):
        (tmp / name).mkdir()
        for f, text in files.items():
            (tmp / name / f).write_text(text)
    (tmp / "page.html").write_text("<html>my page</html>")
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
        gzip.compress(b"\x01\x02" + gzip.decompress((bad / "magic" / "train-labels-idx1-ubyte.gz").read_bytes())[2:])
    )
    labels = gzip.decompress((bad / "count" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    n = int.from_bytes(labels[4:8], "big") - 10
    counted = labels[:4] + n.to_bytes(4, "big") + labels[8 : 8 + n]
    (bad / "count" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(counted))
    return {"tmp": str(tmp), "bad": str(bad), "mnist": str(mnist_dir)}
