# %% [markdown]
# # 1. Catastrophic forgetting in two tasks
#
# A network learns task A, then task B, with nothing but plain gradient descent. How much of A is left?
# The lecture this library grew from shows the classic picture on MNIST: after training on B the
# network is excellent on B and close to chance on A. Here we reproduce it on scikit-learn's real 8×8
# handwritten digits (they ship with scikit-learn, so nothing is downloaded), in two ways:
#
# 1. with `forgetless.run`, the library's loop, on **Permuted digits** (task B is task A with its
#    pixels shuffled by a fixed permutation: the same digits, a new input distribution);
# 2. by hand, in twenty lines of PyTorch, so that nothing is hidden.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

import forgetless as fl

torch.manual_seed(0)
cfg = fl.RunConfig(benchmark="permuted-digits", tasks=2, strategy="naive", epochs=5, eval_every=10, seed=0)
result = fl.run(cfg)
R = np.array(result.accuracy_matrix)
print("accuracy matrix (row: after training task i, column: accuracy on task j)")
print(np.round(R, 3))
print(f"task A: {R[0, 0]:.3f} right after learning it, {R[1, 0]:.3f} after learning B")
print(f"BWT = {result.metrics['bwt']:+.3f} (negative: forgetting)")

# %% [markdown]
# `eval_every=10` evaluated both tasks every 10 optimizer steps, so we can watch A fall while B rises.
# `result.curves` holds those points; `result.plot("curves")` draws them.

# %%
fig = result.plot("curves")
fig.suptitle("naive fine-tuning on two permuted-digit tasks")

# %% [markdown]
# ## The same, by hand
#
# The library's loop is no magic. Below, task A is the digits 0–4 and task B the digits 5–9, and both
# share one set of ten outputs (so learning B is free to push A's outputs down: this is the
# *class-incremental* situation, the hardest one; see [the concepts page](../../concepts.md)).

# %%
from sklearn.datasets import load_digits
from torch import nn

digits = load_digits()
x = torch.tensor(digits.images, dtype=torch.float32).reshape(-1, 64) / 16
y = torch.tensor(digits.target)
perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
train, test = perm[:1400], perm[1400:]
A = lambda idx: idx[y[idx] < 5]  # noqa: E731
B = lambda idx: idx[y[idx] >= 5]  # noqa: E731

model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)


def accuracy(idx):
    with torch.no_grad():
        return (model(x[idx]).argmax(1) == y[idx]).float().mean().item()


history = []
for name, part in (("A", A), ("B", B)):
    idx = part(train)
    for epoch in range(20):
        for batch in idx[torch.randperm(len(idx))].split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
        history.append((f"{name}{epoch + 1}", accuracy(A(test)), accuracy(B(test))))
    print(f"after task {name}: accuracy on A {accuracy(A(test)):.3f}, on B {accuracy(B(test)):.3f}")

# %%
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot([h[1] for h in history], label="test accuracy on A (digits 0-4)")
ax.plot([h[2] for h in history], label="test accuracy on B (digits 5-9)")
ax.axvline(19.5, color="grey", ls=":")
ax.set_xlabel("epoch (20 on A, then 20 on B)")
ax.set_ylabel("accuracy")
ax.set_ylim(0, 1.05)
ax.legend()

# %% [markdown]
# Accuracy on A collapses to zero as soon as B is trained: the network now answers 5–9 for every
# image, because nothing in B's loss asks it to keep the outputs 0–4 alive. In the permuted version
# A only dropped part of the way, because both tasks use the same ten outputs and B's images still
# *are* digits. Which of these situations you are in is the first question of continual learning
# (the three scenarios, [tutorial 3](t3_scenarios.md)); the second is what to do about it, which
# the other tutorials answer: a penalty that keeps the important weights in place
# ([EWC, tutorial 2](t2_ewc.md)), replaying a few stored examples, or distilling the old model's
# answers ([tutorial 4](t4_distillation.md)).
