"""EWC, ER (or any forgetless strategy) inside your own PyTorch training loop.

Your data stays yours: wrap each task's tensors in a ``Task``, describe the output space in a
``Benchmark`` (this is what tells a strategy which outputs compete), and replace your step by
``forgetless.train_step``: it runs the strategy's hooks (replay, the loss, the penalty, gradient
projection, path integrals) around forward, backward and the optimizer step, exactly as the
library's own loop does. Three calls per task: ``before_task``, ``train_step`` per batch,
``after_task``. (Exemplar methods such as iCaRL and BiC train on more than your data: take the
data from ``s.train_data(ctx, task)``, which is the task's own training set for every other method.)

Here: scikit-learn's digits, task A = digits 0-4, task B = 5-9, both mapped onto the same five
outputs (domain-incremental: digit d -> output d % 5), a small MLP, plain Adam.

    python examples/own_loop.py
"""

import torch
from sklearn.datasets import load_digits
from torch import nn

from forgetless import Batch, Benchmark, Context, Task, make_strategy, train_step
from forgetless.data import TensorData

digits = load_digits()
x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
y = torch.tensor(digits.target)
order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
train, test = order[:1400], order[1400:]
tasks = []
for k, classes in enumerate([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]):
    tr = train[torch.isin(y[train], torch.tensor(classes))]  # this task's rows
    te = test[torch.isin(y[test], torch.tensor(classes))]
    tasks.append(
        Task(
            id=k,
            name=f"digits {classes}",
            classes=[0, 1, 2, 3, 4],  # the outputs it uses
            train=TensorData(x[tr], y[tr] % 5),
            test=TensorData(x[te], y[te] % 5),
        )
    )
bench = Benchmark("my-digits", "domain", tasks, n_outputs=5, input_shape=(1, 8, 8))

torch.manual_seed(0)
model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 5))


def accuracy(task):
    with torch.no_grad():
        return (model(task.test.x).argmax(1) == task.test.y).float().mean().item()


for name, params in (("naive", {}), ("ewc", {}), ("er", {"memory": 200})):
    torch.manual_seed(0)
    model[1].reset_parameters(), model[3].reset_parameters()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    s = make_strategy(name, params)
    ctx = Context(model=model, optimizer=opt, benchmark=bench, batch_size=32)
    for task in tasks:
        s.before_task(ctx, task)  # 1
        for _epoch in range(20):
            for idx in torch.randperm(len(task.train)).split(32):
                batch = Batch(task.train.x[idx], task.train.y[idx], task.ids(len(idx)))
                loss = train_step(ctx, s, batch)  # 2 (a tensor: no host sync)
        s.after_task(ctx, task)  # 3
    print(f"{name:>5}: task A {accuracy(tasks[0]):.3f}, task B {accuracy(tasks[1]):.3f}")
