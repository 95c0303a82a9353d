# %% [markdown]
# # 2. EWC from its formula
#
# Elastic Weight Consolidation (Kirkpatrick et al. 2017, PNAS) keeps the weights that mattered for
# task A close to their values after A, in proportion to how much they mattered. While learning B it
# minimizes
#
# \[
# L(\theta) = L_B(\theta) + \sum_i \frac{\lambda}{2} F_i \, (\theta_i - \theta^*_{A,i})^2 ,
# \]
#
# where \(\theta^*_A\) are the weights after A and \(F_i\) is the diagonal of the **Fisher
# information** of the model at \(\theta^*_A\):
#
# \[
# F_i = \frac{1}{N} \sum_{n=1}^{N} \mathbb{E}_{c \sim p_\theta(\cdot \mid x_n)}
#       \left[ \left( \frac{\partial \log p_\theta(c \mid x_n)}{\partial \theta_i} \right)^2 \right] .
# \]
#
# Replacing the expectation over \(c\) by the true label \(y_n\) gives the **empirical Fisher**, which
# is what most implementations (and the course's Keras code) compute. We build everything by hand on
# two Permuted-digits tasks, check it against forgetless, then look at the effect of \(\lambda\) and
# of the Fisher's kind.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from forgetless.strategies.fisher import fisher_diagonal

torch.manual_seed(0)
digits = load_digits()
x = torch.tensor(digits.images, dtype=torch.float32).reshape(-1, 64) / 16
y = torch.tensor(digits.target)
order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
train_idx, test_idx = order[:1400], order[1400:]
pixels = torch.randperm(64, generator=torch.Generator().manual_seed(1))
tasks = {"A": x, "B": x[:, pixels]}  # task B: the same digits, pixels shuffled


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))


def accuracy(model, name):
    with torch.no_grad():
        return (model(tasks[name][test_idx]).argmax(1) == y[test_idx]).float().mean().item()


def train(model, name, epochs=10, penalty=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(2)
    for _ in range(epochs):
        for idx in train_idx[torch.randperm(len(train_idx), generator=g)].split(32):
            loss = nn.functional.cross_entropy(model(tasks[name][idx]), y[idx])
            if penalty is not None:
                loss = loss + penalty(model)
            opt.zero_grad()
            loss.backward()
            opt.step()


model_A = make_model()
train(model_A, "A")
theta_star = [p.detach().clone() for p in model_A.parameters()]
print(f"after A: accuracy on A {accuracy(model_A, 'A'):.3f}")

# %% [markdown]
# ## The Fisher, by hand
#
# One backward pass per sample (the square of a *batch-mean* gradient is a different, much smaller
# quantity). The empirical Fisher uses the true label; the true Fisher weights the squared gradient of
# every class \(c\) by the model's probability \(p(c \mid x)\).


# %%
def fisher_by_hand(model, xs, ys, kind):
    F = [torch.zeros_like(p) for p in model.parameters()]
    for xn, yn in zip(xs, ys):
        logp = torch.log_softmax(model(xn[None]), 1)[0]
        classes = [(int(yn), 1.0)] if kind == "empirical" else [(c, logp[c].exp().item()) for c in range(10)]
        for c, weight in classes:
            grads = torch.autograd.grad(logp[c], list(model.parameters()), retain_graph=True)
            for f, gr in zip(F, grads):
                f += weight * gr**2
    return [f / len(xs) for f in F]


sub = train_idx[:300]
F_emp = fisher_by_hand(model_A, tasks["A"][sub], y[sub], "empirical")
F_true = fisher_by_hand(model_A, tasks["A"][sub], y[sub], "exact")
lib_emp = fisher_diagonal(model_A, tasks["A"][sub], y[sub], labels="empirical")
lib_true = fisher_diagonal(model_A, tasks["A"][sub], y[sub], labels="exact")
for kind, mine, lib in (("empirical", F_emp, lib_emp), ("true (exact)", F_true, lib_true)):
    err = max((a - b).abs().max().item() for a, b in zip(mine, lib))
    print(
        f"{kind:13s} Fisher: sum {sum(f.sum().item() for f in mine):.4f}, "
        f"largest difference from forgetless.strategies.fisher.fisher_diagonal {err:.1e}"
    )
flat = lambda F: torch.cat([f.reshape(-1) for f in F]).numpy()  # noqa: E731
print(
    f"correlation of the two Fishers over the {flat(F_emp).size} weights: "
    f"{np.corrcoef(flat(F_emp), flat(F_true))[0, 1]:.3f}"
)

# %%
fig, ax = plt.subplots(figsize=(4.5, 4))
ax.loglog(flat(F_true) + 1e-12, flat(F_emp) + 1e-12, ".", ms=2, alpha=0.4)
lims = [1e-12, max(flat(F_true).max(), flat(F_emp).max())]
ax.plot(lims, lims, "k:", lw=1)
ax.set_xlabel("true Fisher F_i (expectation over the model's classes)")
ax.set_ylabel("empirical Fisher F_i (true labels)")
ax.set_title("one point per weight, after task A")

# %% [markdown]
# The two agree on *which* weights matter (the points lie along the diagonal, correlation above
# 0.9), but not on how much: for a sample the model already classifies confidently, the gradient of
# \(\log p(y_n \mid x_n)\) at the true label is nearly zero, while the true Fisher still counts the
# (small-probability, large-gradient) other classes. Here the empirical Fisher's total is less than
# half the true one's. The true Fisher is the expected curvature of the log-likelihood under the
# model's own predictions; the empirical one is a cheaper surrogate with a different scale.
#
# ## The penalty and the effect of λ
#
# Now train B starting from \(\theta^*_A\), with the penalty \(\frac{\lambda}{2}\sum_i F_i(\theta_i -
# \theta^*_{A,i})^2\), for a range of \(\lambda\). (forgetless writes the same penalty as
# `lam * sum F (theta - theta*)^2`, so its `lam` is \(\lambda/2\); by default it also rescales each
# task's Fisher to [0, 1] (`normalize=minmax`) so that one `lam` works across benchmarks;
# `normalize=none` is the raw penalty used here.)


# %%
def ewc_penalty(F, lam):
    def penalty(model):
        return lam / 2 * sum((f * (p - t) ** 2).sum() for f, p, t in zip(F, model.parameters(), theta_star))

    return penalty


lams = [0, 1, 10, 100, 300, 1000]
curve = {"empirical": [], "true": []}
for kind, F in (("empirical", F_emp), ("true", F_true)):
    for lam in lams:
        model = make_model()
        model.load_state_dict(model_A.state_dict())
        train(model, "B", penalty=ewc_penalty(F, lam))
        curve[kind].append((accuracy(model, "A"), accuracy(model, "B")))
        a, b = curve[kind][-1]
        print(f"{kind:9s} Fisher, lambda {lam:>6}: accuracy on A {a:.3f}, on B {b:.3f}")

for kind, F in (("empirical", F_emp), ("true", F_true)):
    largest = max(f.max().item() for f in F)
    print(
        f"largest {kind} F_i: {largest:.3f}; plain SGD on the penalty alone is stable while "
        f"lr * lambda * F_i < 2, i.e. lambda < {2 / (0.1 * largest):.0f} for lr 0.1"
    )

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
xs = np.arange(len(lams))
for kind, style in (("empirical", "-o"), ("true", "--s")):
    ax.plot(xs, [a for a, _ in curve[kind]], style, color="C0", label=f"task A, {kind} Fisher")
    ax.plot(xs, [b for _, b in curve[kind]], style, color="C1", label=f"task B, {kind} Fisher")
ax.set_xticks(xs, [str(v) for v in lams])
ax.set_xlabel("lambda")
ax.set_ylabel("test accuracy after B")
ax.legend(fontsize=8)
ax.set_title("EWC: the stability-plasticity trade-off")

# %% [markdown]
# With \(\lambda = 0\) this is plain fine-tuning: A is forgotten. As \(\lambda\) grows, A is kept
# better and B is learnt less well: the penalty trades plasticity for stability. Past a point the
# curve falls off a cliff to chance on *both* tasks: not forgetting, but divergence. The penalty's
# gradient is \(\lambda F_i (\theta_i - \theta^*_i)\), so one SGD step multiplies the distance to
# \(\theta^*\) by \(1 - \text{lr}\,\lambda F_i\), which overshoots once \(\text{lr}\,\lambda F_i > 2\)
# (the printed bound). A large \(\lambda\) needs a smaller learning rate, or Adam, or a normalized
# Fisher. The right \(\lambda\) depends on the Fisher's scale: this is why forgetless's default
# normalizes it and why `forgetless compare --select-on validation` chooses `lam` on held-out data.
# The two kinds of Fisher give similar curves here, shifted by their difference in scale.
#
# ## The same with forgetless
#
# `EWC` with `normalize=none` and `lam` = λ/2 is this penalty; here through `forgetless.run`, on the
# library's Permuted-digits benchmark, against naive fine-tuning:

# %%
import forgetless as fl

for strategy, params in (("naive", {}), ("ewc", {"lam": 100.0}), ("ewc", {"lam": 100.0, "fisher": "exact"})):
    r = fl.run(fl.RunConfig(benchmark="permuted-digits", tasks=2, epochs=5, strategy=strategy, params=params))
    print(
        f"{strategy:5s} {params}: accuracy matrix {np.round(r.accuracy_matrix, 3).tolist()}, "
        f"BWT {r.metrics['bwt']:+.3f}"
    )
