"""Device check: one command that tells whether forgetless works (and how fast) on this machine's device.

    python benchmarks/device_check.py                 # the best device here (CUDA when present)
    python benchmarks/device_check.py --device cuda:1
    python benchmarks/device_check.py --device cpu    # what CI and this repository's machine run (shorter)

No download, at most a few minutes on one GPU:

1. the test suite's device tests on that device (``FORGETLESS_TEST_DEVICE``): tests/test_devices.py
   (every strategy's no-tensor-off-the-device probe, fp16 with a gradient scaler, fused optimizers,
   resume), and on a GPU also the hand-computation tests of the methods (test_method_math.py,
   test_regularization.py, test_replay.py, test_own_loop.py), which then run on the GPU;
2. Split CIFAR-10 in CIFAR's binary format, built from real images (tests/cifar_archives.py: MNIST digits
   padded to 32x32 and coloured), class-incremental, ResNet-18 (GPU: nf=64; CPU: nf=20 on fewer images),
   SGD 0.05 with momentum 0.9, batch 128 (GPU) / 64 (CPU), crop-flip augmentation, 3 epochs per task
   (one epoch of a few hundred images leaves batch norm's running statistics near their start, and the
   matrix says nothing): naive / EWC / ER (and DER when it exists), in float32 and bf16 (where the
   device supports it). For each: the time per epoch, peak device memory and the final row of the
   accuracy matrix;
3. the epoch time of a minimal hand-written loop (same model, data, batch, optimizer) next to
   forgetless's naive epoch on the first task, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--repeats", type=int, default=2, help="timing repeats of the loop comparison")
    ap.add_argument("--quick", action="store_true", help="a smoke test (tiny ResNet, 1 epoch, naive and ER, float32)")
    a = ap.parse_args()

    import torch
    from loop_overhead import minimal_epoch

    import forgetless as fl
    from forgetless import devices
    from forgetless.loop import train_task
    from forgetless.models import build_model
    from forgetless.run import make_optimizer
    from forgetless.strategies import STRATEGIES, Context, Strategy

    device = devices.resolve(a.device)
    gpu = device.type == "cuda"
    print(f"forgetless {fl.__version__}, torch {torch.__version__}, device {devices.describe(device)}")

    failed = 0
    if not a.skip_tests:
        files = ["tests/test_devices.py"] + (
            [
                "tests/test_method_math.py",
                "tests/test_regularization.py",
                "tests/test_replay.py",
                "tests/test_own_loop.py",
            ]
            if gpu
            else []
        )
        env = dict(os.environ, FORGETLESS_TEST_DEVICE=str(device))
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", "pytest", "-x", *files], cwd=ROOT, env=env)
        print(
            f"\n1. device tests ({', '.join(files)}) on {device}: {'passed' if rc == 0 else 'FAILED'} "
            f"in {time.perf_counter() - t0:.0f} s"
        )
        failed += rc != 0

    from cifar_archives import cifar10_archive

    with tempfile.TemporaryDirectory() as tmp:
        n_train, n_test = (1000, 200) if a.quick else (7500, 1000) if gpu else (2500, 500)
        cifar10_archive(Path(tmp), n_train, n_test)
        model = "resnet18:nf=8" if a.quick else "resnet18" if gpu else "resnet18:nf=20"
        batch = 128 if gpu else 64
        epochs = 1 if a.quick else 3
        base = dict(
            benchmark="split-cifar10",
            scenario="class",
            data_dir=tmp,
            download=False,
            model=model,
            epochs=epochs,
            batch_size=batch,
            optimizer="sgd",
            lr=0.05,
            momentum=0.9,
            device=str(device),
        )
        precisions = ["float32"] + (["bf16"] if not a.quick and (not gpu or torch.cuda.is_bf16_supported()) else [])
        names = [n for n in (("naive", "er") if a.quick else ("naive", "ewc", "er", "der")) if n in STRATEGIES]
        print(
            f"\n2. Split CIFAR-10 format ({n_train} real images, 5 tasks x {epochs} epochs), {model}, "
            f"batch {batch}, SGD 0.05 momentum 0.9, crop-flip augmentation"
        )
        print(f"{'strategy':>10} {'precision':>9} {'s/epoch':>8} {'peak MiB':>9}  final row of the accuracy matrix")
        for precision in precisions:
            for name in names:
                if gpu:
                    torch.cuda.reset_peak_memory_stats(device)
                r = fl.run(fl.RunConfig(**base, strategy=name, precision=precision))
                per_epoch = r.timing["train_seconds"] / (len(r.accuracy_matrix) * epochs)
                peak = f"{torch.cuda.max_memory_allocated(device) / 2**20:9.0f}" if gpu else f"{'-':>9}"
                print(
                    f"{name:>10} {precision:>9} {per_epoch:8.2f} {peak}  "
                    + " ".join(f"{v:.3f}" for v in r.accuracy_matrix[-1])
                    + f"   (average {r.metrics['average_accuracy']:.3f})"
                )

        bench = fl.build("split-cifar10", scenario="class", data_dir=tmp, download=False).to(device)
        task = bench.tasks[0]
        xf = task.train.x
        times = {"minimal": [], "forgetless": []}
        for rep in range(1 if a.quick else a.repeats):
            for which in times:
                torch.manual_seed(rep)
                m = build_model(model, bench.input_shape, bench.n_outputs).to(device)
                opt = make_optimizer("sgd", m.parameters(), 0.05, 0.9, device=device)
                g = torch.Generator().manual_seed(rep)
                devices.synchronize(device)
                t0 = time.perf_counter()
                if which == "minimal":
                    minimal_epoch(m, opt, xf, task.train.y, batch, g, device)
                else:
                    ctx = Context(model=m, optimizer=opt, benchmark=bench, batch_size=batch, generator=g, device=device)
                    train_task(ctx, Strategy(), task, epochs=1)
                devices.synchronize(device)
                times[which].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"\n3. one epoch of task 1 ({len(task.train)} images), {model}, no augmentation, float32: "
            f"minimal hand-written loop {med['minimal']:.3f} s, forgetless naive {med['forgetless']:.3f} s, "
            f"ratio {med['forgetless'] / med['minimal']:.3f}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
