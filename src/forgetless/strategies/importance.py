"""Parameter importance (the Omega of the quadratic penalty), one short function per method.

Every estimator returns a list of tensors shaped like the model's trainable parameters (in
``model.parameters()`` order). Per-sample gradients use ``torch.func`` (``functional_call`` +
``vmap(grad)``) in chunks that bound memory. When every trainable parameter sits in an
``nn.Linear`` layer (MLPs), the Fisher and MAS take a shortcut with the same numbers: a Linear's
per-sample gradient is the outer product of the gradient at its output and its input, so sums of
squared (or absolute) per-sample gradients are single matrix products (no per-sample tensors; ~50x
faster). The model is put in eval mode while importance is computed (dropout off, batch norm on
its running statistics) and restored afterwards.

``classes`` is the LongTensor of output indices that compete for the task (from
``Benchmark.active_outputs``): the estimators see ``logits[:, classes]`` and the labels are mapped
to positions within ``classes``. ``None`` means every output.

SI and RWalk accumulate along the training path; their small stateful helpers (``PathIntegral``,
``RiemannianWalk``) are updated after every optimizer step with in-place ``torch._foreach_*`` ops.
"""
from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev, vjp, vmap

from ..errors import UsageError

LABELS = ("empirical", "sample", "exact")
_CHUNK_FLOATS = 1 << 22  # per-sample gradients held at once: 2^22 floats = 16 MB (measured fastest on CPU)


# ---- plumbing ---------------------------------------------------------------------------------
def trainable(model: nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _split(model: nn.Module):
    """(names, detached trainable tensors, frozen dict of other parameters and buffers, the module
    to give ``functional_call``).

    A module reachable under two names (``nn.Sequential(shared, act, shared)``) makes torch's
    ``functional_call`` restore the wrong tensor on exit (the model's parameters are left replaced,
    with requires_grad off); such models are called through a deep copy (in eval mode) instead.
    """
    names, params, frozen = [], [], {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            names.append(name)
            params.append(p.detach())
        else:
            frozen[name] = p.detach()
    frozen.update({n: b for n, b in model.named_buffers()})
    if not params:
        raise UsageError("the model has no trainable parameters: there is nothing to protect")
    target = model
    if len(list(model.named_modules(remove_duplicate=False))) != len(list(model.named_modules())):
        target = copy.deepcopy(model).eval()
    return names, tuple(params), frozen, target


@contextlib.contextmanager
def _eval(model: nn.Module):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _auto_chunk(params, per_sample: int = 1, cap: int = 256) -> int:
    n = sum(p.numel() for p in params) * per_sample
    return max(1, min(cap, _CHUNK_FLOATS // max(n, 1)))


def _default_generator(generator: torch.Generator | None) -> torch.Generator:
    return generator if generator is not None else torch.Generator().manual_seed(0)


def _subsample(x, y, samples: int | None, generator: torch.Generator | None):
    """The first ``samples`` of a generator-seeded permutation (all data when None or larger)."""
    n = len(x)
    if samples is None or samples >= n:
        return x, y
    samples = int(samples)
    if samples < 1:
        raise UsageError(f"samples must be >= 1 (or None for all), got {samples}")
    idx = torch.randperm(n, generator=_default_generator(generator))[:samples]
    return x[idx], (None if y is None else y[idx])


def _positions(y: torch.Tensor, classes: torch.Tensor | None, n_out: int) -> torch.Tensor:
    """Labels (output indices) -> positions within ``classes``."""
    if classes is None:
        return y
    lookup = torch.full((n_out,), -1, dtype=torch.long, device=y.device)
    lookup[classes] = torch.arange(len(classes), device=y.device)
    pos = lookup[y]
    if bool((pos < 0).any()):
        bad = sorted(set(y[pos < 0].tolist()))
        raise UsageError(f"labels {bad} are not among the competing outputs {classes.tolist()}")
    return pos


def _sample_fn(model, names, frozen, classes):
    """f(params, x) -> the (selected) logits of ONE sample x (no batch dimension)."""

    def f(params, x):
        out = functional_call(model, (dict(zip(names, params)), frozen), (x.unsqueeze(0),))[0]
        return out if classes is None else out[classes]

    return f


def _batch_fn(model, names, frozen, classes):
    def f(params, x):
        out = functional_call(model, (dict(zip(names, params)), frozen), (x,))
        return out if classes is None else out[:, classes]

    return f


def _as_long(classes) -> torch.Tensor | None:
    return None if classes is None else torch.as_tensor(classes, dtype=torch.long).flatten()


# ---- the Linear shortcut ----------------------------------------------------------------------
BACKENDS = ("auto", "vmap", "linear")


def _linear_layers(model: nn.Module) -> list[nn.Linear] | None:
    """The nn.Linear layers when they hold every trainable parameter, else None."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    owned = {id(p) for m in linears for p in m.parameters(recurse=False)}
    if any(p.requires_grad and id(p) not in owned for p in model.parameters()):
        return None
    return linears


@contextlib.contextmanager
def _tap(linears):
    """Record (layer, input, output, output version) of every Linear call."""
    records: list = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: records.append((mod, inp[0], out, out._version)))
             for m in linears]
    try:
        yield records
    finally:
        for h in hooks:
            h.remove()


def _choose(model: nn.Module, x: torch.Tensor, backend: str) -> list[nn.Linear] | None:
    """The Linear layers if the shortcut applies (``backend`` auto/linear), None for vmap.

    The shortcut needs: every trainable parameter in an nn.Linear, each Linear called once per
    forward on a [batch, features] input, its output not modified in place (``ReLU(inplace=True)``),
    and samples that do not interact within a batch (true in eval mode for the usual layers).
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "vmap":
        return None
    linears = _linear_layers(model)
    ok = bool(linears)
    if ok:
        with _tap(linears) as rec, torch.no_grad():
            model(x[:2])
        ok = (len({id(r[0]) for r in rec}) == len(rec) and all(r[1].dim() == 2 for r in rec)
              and all(r[2]._version == r[3] for r in rec))
    if not ok and backend == "linear":
        raise UsageError("backend='linear' needs a model whose trainable parameters are all in nn.Linear "
                         "layers, each called once on [batch, features] inputs; use backend='auto'")
    return linears if ok else None


def _linear_accumulate(acc: dict, records, out_grads, kind: str, weight: torch.Tensor | None = None) -> None:
    """Per-sample gradients of a Linear are outer products ``delta_n a_n^T`` (delta: gradient at the
    layer's output, a: its input), so ``sum_n w_n (delta_n a_n^T)^2 = (w delta^2)^T a^2`` and
    ``sum_n |delta_n a_n^T| = |delta|^T |a|``: one matrix product, no per-sample tensors."""
    for (mod, a, _, _), d in zip(records, out_grads):
        if d is None:  # this layer does not reach the quantity
            continue
        a = a.detach()
        D, A = (d * d, a * a) if kind == "square" else (d.abs(), a.abs())
        if weight is not None:
            D = D * weight[:, None]
        if mod.weight.requires_grad:
            acc[id(mod.weight)] += D.T @ A
        if mod.bias is not None and mod.bias.requires_grad:
            acc[id(mod.bias)] += D.sum(0)


# ---- Fisher -----------------------------------------------------------------------------------
def fisher_diagonal(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, classes=None,
                    labels: str = "empirical", samples: int | None = None, chunk: int | None = None,
                    generator: torch.Generator | None = None, backend: str = "auto") -> list[torch.Tensor]:
    """Diagonal Fisher information ``F = mean_n E_c[ (d log p(c | x_n) / d theta)^2 ]``.

    EWC (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural networks", PNAS):
    squared PER-SAMPLE gradients of the log-likelihood, averaged over samples (not the square of the
    batch-mean gradient, which is a different and much smaller quantity). ``labels`` chooses c:

    - ``"empirical"``: the true label y_n (the "empirical Fisher"; needs ``y``);
    - ``"sample"``: one c ~ p(. | x_n) per sample drawn with ``generator`` (an unbiased Monte-Carlo
      estimate of the true Fisher);
    - ``"exact"``: the expectation ``sum_c p(c | x_n) g_c^2`` over every competing class (the true
      Fisher's diagonal; one Jacobian row per class via ``vmap(jacrev)``, or one backward per class).

    ``samples`` caps the count (the first N of a ``generator``-seeded permutation). No constant:
    the 1/2 of EWC's penalty is in ``lam`` (see ``penalty.py``). ``backend``: ``"vmap"`` computes
    per-sample gradients with ``torch.func`` (any module); ``"linear"`` uses the outer-product form of
    nn.Linear layers (same numbers, no per-sample tensors, 23-27x faster than a per-sample loop and 29-43x faster than vmap on the 1024-512-256 MLP, see benchmarks/importance_speed.py); ``"auto"`` takes
    the latter when the model allows it.
    """
    if labels not in LABELS:
        raise UsageError(f"unknown Fisher labels {labels!r}; choose one of: {', '.join(LABELS)}")
    if labels == "empirical" and y is None:
        raise UsageError("the empirical Fisher needs the labels y")
    classes = _as_long(classes)
    gen = _default_generator(generator)
    x, y = _subsample(x, y, samples, gen)
    names, params, frozen, fmodel = _split(model)
    f = _sample_fn(fmodel, names, frozen, classes)
    fb = _batch_fn(fmodel, names, frozen, classes)
    n = len(x)
    with _eval(model):
        linears = _choose(model, x, backend)
        with torch.no_grad():
            n_out = _batch_fn(fmodel, names, frozen, None)(params, x[:1]).shape[1]
        n_cls = n_out if classes is None else len(classes)
        if linears is not None:
            size = chunk or 1024
        else:
            size = chunk or _auto_chunk(params, n_cls if labels == "exact" else 1)
        keys = [id(p) for p in trainable(model)]  # the real parameters (``params`` are detached copies)
        acc = {k: torch.zeros_like(p) for k, p in zip(keys, params)}
        for i in range(0, n, size):
            xc = x[i:i + size]
            probs = None
            if labels != "empirical":
                with torch.no_grad():
                    probs = F.softmax(fb(params, xc), -1)  # [B, C]
            if labels == "empirical":
                yc = _positions(y[i:i + size], classes, n_out)
            elif labels == "sample":  # y ~ p(. | x)
                yc = torch.multinomial(probs, 1, generator=gen).squeeze(1)
            if linears is not None:
                with _tap(linears) as rec, torch.enable_grad():
                    out = model(xc)
                    logp = F.log_softmax(out if classes is None else out[:, classes], -1)
                    zs = [r[2] for r in rec]
                    if labels == "exact":
                        for c in range(n_cls):
                            d = torch.autograd.grad(logp[:, c].sum(), zs, retain_graph=True, allow_unused=True)
                            _linear_accumulate(acc, rec, d, "square", probs[:, c])
                    else:
                        d = torch.autograd.grad(logp.gather(1, yc[:, None]).sum(), zs, allow_unused=True)
                        _linear_accumulate(acc, rec, d, "square")
                continue
            if labels == "exact":
                J = vmap(jacrev(lambda p, xi: F.log_softmax(f(p, xi), -1)), in_dims=(None, 0))(params, xc)
                for k, j in zip(keys, J):
                    acc[k] += torch.einsum("bc,bc...->...", probs, j * j)
                continue
            G = vmap(grad(lambda p, xi, yi: F.log_softmax(f(p, xi), -1).gather(0, yi[None])[0]),
                     in_dims=(None, 0, 0))(params, xc, yc)
            for k, g in zip(keys, G):
                acc[k] += (g * g).sum(0)
    return [acc[k] / n for k in keys]


# ---- MAS --------------------------------------------------------------------------------------
def mas_importance(model: nn.Module, x: torch.Tensor, *, classes=None, chunk: int | None = None,
                   backend: str = "auto") -> list[torch.Tensor]:
    """MAS: ``Omega = mean_n | d ||f(x_n)||_2^2 / d theta |``.

    Aljundi et al. 2018, "Memory Aware Synapses: Learning what (not) to forget", ECCV, eq. 2-4: the
    gradient of the SQUARED L2 norm of the network output for each sample, its absolute value, then
    the mean over samples (per sample, as in the paper; the authors' code takes |.| of the gradient
    of a whole mini-batch's summed norm, a cheaper approximation). The output is the logits
    (pre-softmax) restricted to the competing outputs ``classes``, so the heads of other tasks get
    zero importance. Needs no labels. ``backend`` as for ``fisher_diagonal``.
    """
    classes = _as_long(classes)
    names, params, frozen, fmodel = _split(model)
    f = _sample_fn(fmodel, names, frozen, classes)
    keys = [id(p) for p in trainable(model)]  # the real parameters (``params`` are detached copies)
    acc = {k: torch.zeros_like(p) for k, p in zip(keys, params)}
    with _eval(model):
        linears = _choose(model, x, backend)
        size = chunk or (1024 if linears is not None else _auto_chunk(params))
        for i in range(0, len(x), size):
            xc = x[i:i + size]
            if linears is not None:
                with _tap(linears) as rec, torch.enable_grad():
                    out = model(xc)
                    sq = (out if classes is None else out[:, classes]).square().sum()
                    d = torch.autograd.grad(sq, [r[2] for r in rec], allow_unused=True)
                _linear_accumulate(acc, rec, d, "abs")
                continue
            G = vmap(grad(lambda p, xi: f(p, xi).square().sum()), in_dims=(None, 0))(params, xc)
            for k, g in zip(keys, G):
                acc[k] += g.abs().sum(0)
    return [acc[k] / len(x) for k in keys]


# activation functions a Linear's output may pass through (their autograd node names)
_ELEMENTWISE = {"ReluBackward0", "ReluBackward1", "TanhBackward0", "SigmoidBackward0", "GeluBackward0",
                "EluBackward0", "LeakyReluBackward0", "SiluBackward0", "HardtanhBackward0",
                "SoftplusBackward0", "MishBackward0", "HardswishBackward0", "HardsigmoidBackward0",
                "ThresholdBackward0", "ThresholdBackward1", "CeluBackward0", "SeluBackward0", "PreluBackward0"}


def mas_hebbian(model: nn.Module, x: torch.Tensor, *, classes=None,
                chunk: int | None = None) -> list[torch.Tensor]:
    """Local (Hebbian) MAS: per ``nn.Linear``, ``Omega_ij = mean_n |y_i(x_n) x_j(x_n)|``, bias ``mean_n |y_i|``.

    Aljundi et al. 2018, section "Connection to Hebbian learning": MAS applied locally to one layer,
    with the squared norm of that layer's output, gives an importance proportional to the
    co-activation of the pre-synaptic input x_j and the post-synaptic output y_i (for ReLU the
    local gradient is exactly 2 y_i x_j; we drop the 2 - the scale lives in lam). y_i is the
    neuron's output AFTER its activation function when one follows the layer (found through the
    autograd graph, so ``nn.ReLU`` modules and ``F.relu`` calls both work); the output layer's
    y_i are the logits, and with ``classes`` its rows of non-competing outputs get zero.

    Only for models whose trainable parameters all belong to ``nn.Linear`` layers; others raise
    UsageError.
    """
    classes = _as_long(classes)
    linears = _linear_layers(model)
    if linears is None:
        raise UsageError("MAS with hebbian=true needs a model whose trainable parameters are all in nn.Linear "
                         f"layers (and activations); {type(model).__name__} has others: use hebbian=false")
    params = trainable(model)
    acc = {id(p): torch.zeros_like(p) for p in params}
    size = chunk or 1024
    with _eval(model), torch.enable_grad():
        for i in range(0, len(x), size):
            with _tap(linears) as records:
                out = model(x[i:i + size])
                for k, (mod, pre, z, _) in enumerate(records):
                    post = _post_activation(z, [r[1] for r in records[k + 1:]] + [out])
                    pre2 = pre.detach().reshape(-1, pre.shape[-1]).abs()
                    post2 = post.detach().reshape(-1, post.shape[-1]).abs()
                    if classes is not None and (post is out or z is out):
                        keep = post2.new_zeros(post2.shape[1])
                        keep[classes] = 1
                        post2 = post2 * keep
                    if mod.weight.requires_grad:
                        acc[id(mod.weight)] += post2.T @ pre2
                    if mod.bias is not None and mod.bias.requires_grad:
                        acc[id(mod.bias)] += post2.sum(0)
    return [acc[id(p)] / len(x) for p in params]


def _post_activation(z: torch.Tensor, consumers: list[torch.Tensor]) -> torch.Tensor:
    """The activation of ``z`` among the tensors fed onward (z itself when none is found)."""
    for u in consumers:
        if u is z:
            return z
        fn = u.grad_fn
        if fn is not None and type(fn).__name__ in _ELEMENTWISE and fn.next_functions \
                and fn.next_functions[0][0] is z.grad_fn:
            return u
    return z


# ---- SCP --------------------------------------------------------------------------------------
def scp_importance(model: nn.Module, x: torch.Tensor, *, classes=None, slices: int = 50,
                   generator: torch.Generator | None = None, chunk: int | None = None) -> list[torch.Tensor]:
    """Sliced Cramér Preservation: ``Gamma = (1/L) sum_l (d <xi_l, phi_bar> / d theta)^2``.

    Kolouri et al. 2020, "Sliced Cramér Synaptic Consolidation for Preserving Deeply Learned
    Representations", ICLR. phi_bar = mean_n f(x_n) is the mean output (logits on ``classes``) over
    the task's data - averaged BEFORE the projection, as in the authors' code - and xi_1..xi_L are
    uniform random unit vectors (normalized Gaussians drawn with ``generator``); each slice's
    gradient is squared, then the squares are averaged over slices. (The authors' code also divides
    by the dataset size; we do not - that constant is absorbed in lam.)
    """
    if slices < 1:
        raise UsageError(f"SCP needs slices >= 1, got {slices}")
    classes = _as_long(classes)
    names, params, frozen, fmodel = _split(model)
    fb = _batch_fn(fmodel, names, frozen, classes)
    n = len(x)
    size = chunk or 1024
    with _eval(model):
        with torch.no_grad():
            K = fb(params, x[:1]).shape[1]
        xi = torch.randn(slices, K, generator=_default_generator(generator))
        xi = (xi / xi.norm(dim=1, keepdim=True)).to(params[0])
        # project now (fewer slices than outputs), or build the Jacobian and project after
        cot = xi if slices <= K else torch.eye(K).to(params[0])
        acc = [p.new_zeros(len(cot), *p.shape) for p in params]
        for i in range(0, n, size):
            xc = x[i:i + size]
            _, pull = vjp(lambda *p: fb(p, xc).sum(0), *params)
            for a, g in zip(acc, vmap(pull)(cot)):
                a += g
    out = []
    for a in acc:
        g = a / n  # gradient of the projected MEAN output, one row per slice (or per output)
        if slices > K:
            g = torch.tensordot(xi, g, dims=1)
        out.append((g * g).mean(0))
    return out


# ---- path integrals (SI, RWalk) ---------------------------------------------------------------
def _zeros_like(params):
    return [torch.zeros_like(p, memory_format=torch.contiguous_format) for p in params]


def _copy(params):
    return [p.detach().clone(memory_format=torch.contiguous_format) for p in params]


class PathIntegral:
    """SI's running path integral (Zenke, Poole & Ganguli 2017, "Continual Learning Through Synaptic
    Intelligence", ICML, eq. 3-5).

    After every optimizer step: ``omega += -g * delta`` where delta = theta_after - theta_before and g
    is the gradient of the TASK loss only. The paper's g is "the gradient of the loss", and the
    authors' code (ganguli-lab/pathint, ``unreg_grads``) uses the gradient of the unregularized loss,
    not of the loss plus the SI penalty; ``capture`` must be given that gradient (the strategy takes
    ``p.grad`` in ``after_backward`` before adding the closed-form penalty gradient, or subtracts it
    in autograd mode). At the task's end ``omega / (Delta^2 + xi)`` with Delta = theta_end -
    theta_start is the task's contribution to Omega (``importance``).
    """

    def __init__(self):
        self.started = False

    def begin(self, params) -> None:
        self.start = _copy(params)
        self.prev = _copy(params)
        self.omega = _zeros_like(params)
        self.grad = _zeros_like(params)
        self.started = True

    @torch.no_grad()
    def capture(self, grads, copy: bool = True) -> None:
        """The task-loss gradient of this step: copied, or (``copy=False``) the tensors themselves,
        which the caller promises not to modify before ``step``."""
        if copy:
            torch._foreach_copy_(self.grad, list(grads))
        else:
            self.grad = list(grads)

    @torch.no_grad()
    def step(self, params) -> None:
        self._accumulate(list(params))

    def _accumulate(self, params: list[torch.Tensor]) -> None:
        """``omega += -g * delta``, in place with no temporary: prev <- prev - theta = -delta (exactly)."""
        torch._foreach_sub_(self.prev, params)
        torch._foreach_addcmul_(self.omega, self.grad, self.prev)
        torch._foreach_copy_(self.prev, params)

    @torch.no_grad()
    def importance(self, params, xi: float) -> list[torch.Tensor]:
        """``omega / (Delta^2 + xi)``, Delta = theta_now - theta_at_begin."""
        d = torch._foreach_sub(list(params), self.start)
        den = torch._foreach_mul(d, d)
        torch._foreach_add_(den, xi)
        return torch._foreach_div(self.omega, den)


class RiemannianWalk(PathIntegral):
    """RWalk's online Fisher and KL-normalized path-integral score (Chaudhry, Dokania, Ajanthan &
    Torr 2018, "Riemannian Walk for Incremental Learning", ECCV, eq. 8-10).

    After every optimizer step, with g the task-loss gradient of the mini-batch:
    ``tmp += g^2`` and ``omega += -g * delta``. Every ``interval`` steps (the authors' code updates
    every 10 iterations: ``FISHER_UPDATE_AFTER = 10`` in facebookresearch/agem) the empirical
    Fisher is updated as an exponential moving average ``F = alpha * mean_interval(g^2) + (1 -
    alpha) * F`` (alpha = 0.9 weighting the new estimate: the code's ``FISHER_EMA_DECAY = 0.9``;
    the first interval initializes F)
    and the interval's score is added::

        s_task += max(0, omega / (0.5 * F * Delta^2 + eps)),     Delta = theta_now - theta_interval_start

    the 1/2 being the paper's second-order KL ``0.5 * F * Delta^2`` (the authors' code drops it);
    eps = 1e-3 is the code's value; the clamp at 0 is the code's (a negative path integral means the
    loss went up along the interval: that parameter earned no importance). We use F after this
    interval's update (the code uses the previous interval's; for the first interval that is 0).
    ``flush`` closes a partial interval at the task's end, so no step of the path is dropped.
    The Fisher persists across tasks; the per-task score is reset by ``begin``.
    """

    def __init__(self, alpha: float = 0.9, eps: float = 1e-3, interval: int = 10):
        if not 0 < alpha <= 1:
            raise UsageError(f"RWalk alpha must be in (0, 1], got {alpha}")
        if interval < 1:
            raise UsageError(f"RWalk interval must be >= 1, got {interval}")
        self.alpha, self.eps, self.interval = alpha, eps, interval
        self.fisher: list[torch.Tensor] | None = None
        self.started = False

    def begin(self, params) -> None:
        self.prev = _copy(params)
        self.ref = _copy(params)
        self.omega = _zeros_like(params)
        self.tmp = _zeros_like(params)
        self.grad = _zeros_like(params)
        self.score = _zeros_like(params)
        self.count = 0
        self.started = True

    @torch.no_grad()
    def step(self, params) -> None:
        params = list(params)
        torch._foreach_addcmul_(self.tmp, self.grad, self.grad)
        self._accumulate(params)  # the same path integral as SI
        self.count += 1
        if self.count >= self.interval:
            self.flush(params)

    @torch.no_grad()
    def flush(self, params) -> None:
        if self.count == 0:
            return
        params = list(params)
        torch._foreach_div_(self.tmp, float(self.count))
        if self.fisher is None:
            self.fisher = [t.clone() for t in self.tmp]
        else:
            torch._foreach_mul_(self.fisher, 1.0 - self.alpha)
            torch._foreach_add_(self.fisher, self.tmp, alpha=self.alpha)
        # in place in ref and omega (both reset below), no temporaries: same numbers
        den = self.ref
        torch._foreach_sub_(den, params)  # -d; squared next
        torch._foreach_mul_(den, den)
        torch._foreach_mul_(den, self.fisher)
        torch._foreach_mul_(den, 0.5)
        torch._foreach_add_(den, self.eps)
        torch._foreach_div_(self.omega, den)
        torch._foreach_clamp_min_(self.omega, 0.0)
        torch._foreach_add_(self.score, self.omega)
        torch._foreach_zero_(self.tmp)
        torch._foreach_zero_(self.omega)
        torch._foreach_copy_(self.ref, params)
        self.count = 0


def minmax(flat: torch.Tensor, eps: float = 1e-32) -> torch.Tensor:
    """``(v - min) / (max - min + eps)`` over ALL parameters at once (RWalk's normalization; the
    authors' code takes the min and max over every layer together, with eps = 1e-32)."""
    lo, hi = flat.min(), flat.max()
    return (flat - lo) / (hi - lo + eps)


# ---- reference (tests and benchmarks only) ----------------------------------------------------
def per_sample_grads_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, classes=None,
                          target: str = "logp") -> list[torch.Tensor]:
    """Per-sample gradients with a plain Python loop and ``torch.autograd.grad``: the oracle for the
    vectorized estimators. Returns one [N, *shape] tensor per trainable parameter.

    ``target``: ``"logp"`` (log p(y_n | x_n) over ``classes``), ``"sqnorm"`` (||f(x_n)||^2) or an
    int c (log p(c | x_n), with c a position within ``classes``).
    """
    classes = _as_long(classes)
    params = trainable(model)
    rows = []
    with _eval(model):
        for i in range(len(x)):
            out = model(x[i:i + 1])[0]
            if classes is not None:
                out = out[classes]
            if target == "sqnorm":
                value = out.square().sum()
            else:
                logp = F.log_softmax(out, -1)
                if isinstance(target, int):
                    c = target
                else:
                    c = int(y[i]) if classes is None else int((classes == y[i]).nonzero()[0, 0])
                value = logp[c]
            rows.append(torch.autograd.grad(value, params))
    return [torch.stack([r[k] for r in rows]) for k in range(len(params))]

