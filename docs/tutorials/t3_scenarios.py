# %% [markdown]
# # 3. The three scenarios on Split MNIST
#
# Split MNIST cuts the ten digits into five tasks of two classes: 0/1, 2/3, 4/5, 6/7, 8/9. The *same*
# sequence of data becomes three different problems depending on what the model is asked at test
# time (van de Ven, Tuytelaars & Tolias 2022, "Three types of incremental learning"):
#
# | scenario | at test time | outputs that compete |
# |---|---|---|
# | task-IL (`task`) | the task is given: "is this a 4 or a 5?" | the two classes of that task |
# | domain-IL (`domain`) | task unknown, but only "first or second digit of its pair?" | two shared outputs |
# | class-IL (`class`) | task unknown, "which digit is it?" | every class seen so far |
#
# We run naive fine-tuning, EWC and experience replay (ER, 500 stored examples) in each, on
# `tests/data/mnist-subset` (10,000 real MNIST digits shipped with the repository), with a small
# MLP (one hidden layer of 256) and two epochs per task so that the nine runs fit in a minute.

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import forgetless as fl

DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "mnist-subset"
runs = {}
for scenario in ("task", "domain", "class"):
    for strategy, params in (("naive", {}), ("ewc", {}), ("er", {"memory": 500})):
        cfg = fl.RunConfig(
            benchmark="split-mnist",
            scenario=scenario,
            strategy=strategy,
            params=params,
            model="mlp:256",
            epochs=2,
            data_dir=str(DATA),
            seed=0,
        )
        runs[scenario, strategy] = fl.run(cfg)
print(f"{'':8s}" + "".join(f"{s:>10s}" for s in ("naive", "ewc", "er")) + "   (final average accuracy)")
for scenario in ("task", "domain", "class"):
    print(
        f"{scenario:8s}"
        + "".join(f"{runs[scenario, s].metrics['average_accuracy']:10.3f}" for s in ("naive", "ewc", "er"))
    )

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 3), sharey=True)
for ax, scenario in zip(axes, ("task", "domain", "class")):
    for strategy in ("naive", "ewc", "er"):
        A = runs[scenario, strategy].metrics["average_accuracies"]
        ax.plot(range(1, len(A) + 1), A, "-o", label=strategy)
    ax.set_title(f"{scenario}-IL")
    ax.set_xlabel("tasks learnt")
    ax.set_xticks(range(1, 6))
axes[0].set_ylabel("average accuracy A_k")
axes[0].legend()
fig.suptitle("Split MNIST: average accuracy over the tasks seen so far", y=1.04)

# %% [markdown]
# Task-IL is nearly solved by everything: with only two outputs competing, even naive fine-tuning
# keeps most of each task. Domain-IL is harder, and class-IL is where methods part ways: naive and
# EWC end near 0.2 (the last task's two classes out of ten, plus a little), while replay keeps most
# of the digits.
#
# ## Why EWC does nothing in class-IL
#
# Look at the class-IL accuracy matrices, and at the *task-aware* matrix forgetless records next to
# the usual one in class-IL (each task's test images scored with only that task's classes competing,
# as task-IL would score them).

# %%
for strategy in ("naive", "ewc", "er"):
    r = runs["class", strategy]
    print(f"{strategy}: accuracy on each task after the last one        {np.round(r.accuracy_matrix[-1], 2).tolist()}")
    print(
        f"{'':{len(strategy)}s}  the same, only each task's own classes competing "
        f"{np.round(r.task_aware_accuracy_matrix[-1], 2).tolist()}"
    )

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 3))
for ax, strategy in zip(axes, ("naive", "ewc", "er")):
    im = ax.imshow(runs["class", strategy].accuracy_matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_title(f"class-IL, {strategy}")
    ax.set_xlabel("accuracy on task j")
    ax.set_ylabel("after training task i")
fig.colorbar(im, ax=axes, shrink=0.8)

# %% [markdown]
# In class-IL, naive and EWC score 0 on every old task: every image is called one of the last two
# digits. Yet the old tasks' knowledge is largely *still in the network*: scored among their own two
# classes, the old tasks are recognized almost perfectly with EWC, and even naive keeps much of it
# (EWC does protect what it was designed to protect). What EWC cannot stop is the new task's outputs
# winning every comparison. While task k is trained, its loss only ever sees images of its two
# classes, so the cheapest way down is to raise those two outputs' biases and weights for every
# input; the penalty protects the weights that were important for the *old* outputs' decisions
# among themselves, but it puts no cost on the new outputs growing larger than the old ones,
# because the old tasks never had to tell their classes apart from classes they had not seen.
# No penalty on weights can supply the missing comparison between an old
# class and a new one; examples of the old classes can. Replay puts a few stored old images in every
# batch, so the loss compares old and new classes directly, and the old outputs stay competitive.
#
# This is a known property of regularization methods, not a bug (van de Ven et al. 2022; Lesort et
# al. 2019): forgetless says so when you run a regularizer in class-IL, and distillation methods
# suffer the same way unless they correct the bias towards the new classes
# ([tutorial 4](t4_distillation.md)).
