# %% [markdown]
# # 4. Distillation and bias correction: LwF, iCaRL, BiC
#
# **Knowledge distillation** (Hinton et al. 2015) trains a student to reproduce a teacher's softened
# outputs \(\mathrm{softmax}(z / T)\). In continual learning the teacher is *the model itself before
# the current task*: Learning without Forgetting (LwF, Li & Hoiem 2017) adds to the new task's loss a
# term that keeps the new model's outputs on the old classes close to the old model's, on the new
# task's inputs,
#
# \[
# L = \mathrm{CE}(y, z) + \lambda_o \, T^2 \,
#     \mathrm{KL}\!\left(\mathrm{softmax}(z^{old}/T) \,\middle\|\, \mathrm{softmax}(z/T)\right).
# \]
#
# No data of the old tasks is stored. In class-IL this is not enough, for the reason of
# [tutorial 3](t3_scenarios.md): the new classes are trained against nothing. Two methods add a small
# memory of **exemplars** and then deal with what remains, the **bias** towards the new classes:
#
# - **iCaRL** (Rebuffi et al. 2017): distillation plus exemplars chosen by herding, and classification
#   by the *nearest mean of exemplars* in feature space instead of the biased output layer;
# - **BiC** (Wu et al. 2019): distillation plus exemplars, then a second stage that fits two numbers
#   per task, \(q = \alpha o + \beta\) on the new classes' logits \(o\), on a small balanced validation
#   set of exemplars.
#
# All on Split digits (scikit-learn's 8×8 digits, five tasks of two classes), class-IL, the same small
# MLP and memory (200 examples) for every method with one.

# %%
import matplotlib.pyplot as plt
import numpy as np

import forgetless as fl

base = dict(benchmark="split-digits", scenario="class", model="mlp:256", epochs=10, seed=0)
methods = {
    "naive": {},
    "lwf": {"lam": 1.0},
    "lwf (balanced)": {"lam": 1.0, "balance": True},
    "er": {"memory": 200},
    "icarl": {"memory": 200},
    "bic": {"memory": 200},
}
runs, strategies = {}, {}
for label, params in methods.items():
    name = label.split(" ")[0]
    strategies[label] = fl.make_strategy(name, params)
    runs[label] = fl.run(fl.RunConfig(strategy=name, params=params, **base), strategy=strategies[label])
    r = runs[label]
    print(
        f"{label:15s} final average accuracy {r.metrics['average_accuracy']:.3f}   "
        f"accuracy on each task after the last: {np.round(r.accuracy_matrix[-1], 2).tolist()}"
    )

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
width = 0.13
for k, label in enumerate(runs):
    final = runs[label].accuracy_matrix[-1]
    ax.bar(np.arange(5) + (k - 2.5) * width, final, width, label=label)
ax.set_xticks(range(5), [f"task {j + 1}\n({2 * j},{2 * j + 1})" for j in range(5)])
ax.set_ylabel("accuracy after the last task")
ax.legend(fontsize=7, ncol=3)
ax.set_title("Split digits, class-IL")

# %% [markdown]
# Naive ends at the last task's share (every image is called an 8 or a 9). LwF, without storing a
# single image, keeps about half of the old tasks here: its class-IL targets give the new classes
# probability 0, which does push the new outputs down on the new images. Its balance is fragile,
# though: `balance=true` (van de Ven et al.'s weighting) multiplies the distillation by the number of
# old tasks, and with `lam=1` that is so stiff that the later tasks are hardly learnt at all (the
# stability end of the trade-off; `lam` has to be chosen for it, see the LwF page). With exemplars
# the old classes come back: replay alone (ER) already does most of the work on this small
# benchmark, and iCaRL and BiC add their ways of fighting the bias.
#
# ## The bias, and BiC's correction
#
# BiC's second stage learnt one \((\alpha_k, \beta_k)\) per task (task 1 has none: there is nothing to
# correct after one task). \(\alpha < 1\) or \(\beta < 0\) shrinks the new classes' logits, i.e. the
# model's outputs on the newest classes were too large compared with the old ones.

# %%
bias = strategies["bic"].bias_.cpu().numpy()
for k, (alpha, beta) in enumerate(bias):
    print(f"task {k + 1}: alpha {alpha:.3f}, beta {beta:+.3f}")

# %% [markdown]
# How biased is the output layer without such a correction? The accuracy matrix shows it indirectly:
# right after each task, the accuracy on that newest task (the diagonal) against the mean over the
# older ones. A method whose diagonal stays near 1 while the older tasks fall is predicting the
# newest classes too often.

# %%
fig, ax = plt.subplots(figsize=(6, 3))
for label in ("naive", "lwf", "er", "icarl", "bic"):
    R = np.array(runs[label].accuracy_matrix)
    old = [R[k, :k].mean() for k in range(1, 5)]
    new = [R[k, k] for k in range(1, 5)]
    gap = np.array(new) - np.array(old)
    ax.plot(range(2, 6), gap, "-o", label=label)
    print(f"{label:6s} newest minus older, after tasks 2..5: {np.round(gap, 2).tolist()}")
ax.axhline(0, color="grey", lw=0.5)
ax.set_xlabel("after task k")
ax.set_ylabel("newest task's accuracy\nminus older tasks' mean")
ax.set_xticks(range(2, 6))
ax.legend(fontsize=8)

# %% [markdown]
# Naive's gap is close to 1 after every task: everything is called one of the newest classes. LwF's
# swings: after task 2 the distillation held the model so firmly that the new task was barely learnt
# (a negative gap), later the new classes win again. With 200 exemplars (20 per class) the gap of ER,
# iCaRL and BiC stays within a few points of zero: on ten 8×8 digit classes replay alone removes
# most of the bias, and BiC's fitted \(\beta_k < 0\) shows the small correction it still found
# worthwhile. On large benchmarks (ImageNet-scale in the BiC paper, with far fewer exemplars per class
# than classes) that correction is what makes the difference. The pages of
# [LwF](../../methods/lwf.md), [iCaRL](../../methods/icarl.md) and [BiC](../../methods/bic.md)
# give their parameters, costs and measured results.
