"""CEC: the Continually Evolved Classifier of few-shot class-incremental learning (Zhang et al. 2021)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from .base import Param, Strategy
from .icarl import features
from .prototype import add_class_means

QUERY_CHUNK = 256  # queries adapted at once (each query has its own graph: [chunk, classes, d] tensors)


class GraphAttention(nn.Module):
    """The one-head self-attention block CEC uses as its graph model over classifier vectors (the
    attention block of FEAT, Ye, Hu, Zhan & Sha 2020, "Few-Shot Learning via Embedding Adaptation
    with Set-to-Set Functions"). For a set X = [x_1 .. x_L] of d-dimensional nodes:

        Q = X Wq^T,  K = X Wk^T,  V = X Wv^T               (no biases)
        A = softmax(Q K^T / sqrt(d))                       (rows; dropout on A while training)
        out = LayerNorm(dropout(A V Wo^T + bo) + X)        (residual, layer norm with gain and bias)

    Initialisation as FEAT/CEC: Wq, Wk, Wv ~ N(0, 2/(d+d)), Wo Xavier-normal (the same std);
    bo = 0 (our choice: PyTorch's default would be uniform); the layer norm starts at gain 1, bias 0.
    The weights are drawn from ``generator`` so that a run is reproducible.
    """

    def __init__(
        self, d: int, dropout: float = 0.0, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ):
        super().__init__()
        self.d, self.p = d, dropout
        std = math.sqrt(2.0 / (d + d))
        g = generator if generator is not None else torch.Generator()  # never the global RNG

        def weight():  # drawn on the CPU (the generator's device), then moved
            return nn.Parameter((torch.randn(d, d, generator=g, device="cpu") * std).to(device))

        self.w_q, self.w_k, self.w_v, self.w_o = weight(), weight(), weight(), weight()
        self.b_o = nn.Parameter(torch.zeros(d, device=device))
        self.norm = nn.LayerNorm(d, device=device)

    def _drop(self, t: torch.Tensor) -> torch.Tensor:
        return F.dropout(t, self.p, self.training) if self.p > 0 else t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every node of the set(s) ``x`` [..., L, d] adapted by attention over its own set."""
        q, k, v = x @ self.w_q.T, x @ self.w_k.T, x @ self.w_v.T
        attn = self._drop(torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.d), dim=-1))
        return self.norm(self._drop(attn @ v @ self.w_o.T + self.b_o) + x)

    def with_query(self, protos: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For every query b, the set [p_1 .. p_n, q_b] through ``forward`` (as CEC's code does at
        training and test time), without building the B sets: returns (adapted prototypes [B, n, d],
        adapted queries [B, d]). Exact, because the output map is linear:
        Wo (sum_i a_i v_i) = sum_i a_i (Wo v_i), so the prototypes' projections are computed once."""
        n, _d = protos.shape
        scale = 1.0 / math.sqrt(self.d)
        qp, kp, vp = protos @ self.w_q.T, protos @ self.w_k.T, protos @ self.w_v.T  # [n, d]
        qq, kq, vq = queries @ self.w_q.T, queries @ self.w_k.T, queries @ self.w_v.T  # [B, d]
        up, uq = vp @ self.w_o.T, vq @ self.w_o.T  # Wo v, without the bias
        B = len(queries)
        # prototype rows: keys p_1..p_n (shared) and q_b
        s_pp = (qp @ kp.T * scale).expand(B, n, n)
        s_pq = (qp @ kq.T * scale).T.unsqueeze(2)  # [B, n, 1]
        a_p = self._drop(torch.softmax(torch.cat([s_pp, s_pq], 2), dim=2))  # [B, n, n + 1]
        mixed_p = a_p[:, :, :n] @ up + a_p[:, :, n:] * uq[:, None, :] + self.b_o
        out_p = self.norm(self._drop(mixed_p) + protos)
        # query row: keys p_1..p_n and q_b itself
        s_qp = qq @ kp.T * scale  # [B, n]
        s_qq = (qq * kq).sum(1, keepdim=True) * scale  # [B, 1]
        a_q = self._drop(torch.softmax(torch.cat([s_qp, s_qq], 1), dim=1))  # [B, n + 1]
        mixed_q = a_q[:, :n] @ up + a_q[:, n:] * uq + self.b_o
        out_q = self.norm(self._drop(mixed_q) + queries)
        return out_p, out_q


def cosine_logits(
    attn: GraphAttention, protos: torch.Tensor, phi: torch.Tensor, temperature: float, query_node: bool
) -> torch.Tensor:
    """[B, n] = temperature * cos(query, prototype) after the graph attention: with ``query_node``
    each query joins the prototypes' graph (both adapted, CEC's code), else the graph holds the
    prototypes alone and the raw feature is compared to the adapted prototypes."""
    if not query_node:
        adapted = attn(protos[None])[0]
        return temperature * (F.normalize(phi, dim=1) @ F.normalize(adapted, dim=1).T)
    out = []
    for i in range(0, len(phi), QUERY_CHUNK):
        p, q = attn.with_query(protos, phi[i : i + QUERY_CHUNK])
        out.append(temperature * (F.normalize(p, dim=2) @ F.normalize(q, dim=1)[:, :, None])[:, :, 0])
    return torch.cat(out) if out else phi.new_zeros(0, len(protos))


class CEC(Strategy):
    """CEC (Zhang, Song, Lin, Zheng, Pan & Xu, CVPR 2021, "Few-Shot Incremental Learning with
    Continually Evolved Classifiers"; the authors' code: github.com/icoz69/CEC-CVPR2021).
    Class-incremental (FSCIL: ``--scenario fscil``). Published first -> last session accuracy (%):
    CIFAR-100 (ResNet-20; 60 base classes + 8 sessions of 5-way 5-shot) 73.07 -> 49.14, miniImageNet
    (ResNet-18; same protocol) 72.00 -> 47.63, CUB-200 (ImageNet-pretrained ResNet-18; 100 base + 10
    sessions of 10-way 5-shot) 75.85 -> 52.28.

    phi(x) = the input of the model's last nn.Linear (``icarl.features``), as in ``prototype``.

    1. Base session (task 0): the loop trains backbone and output layer with cross-entropy.
    2. After it the backbone is frozen for good: later sessions train nothing (``train_data`` is
       None). The classifier is one prototype per class, p_c = mean of phi(x) over its training
       examples (all the base data; the K shots later). As CEC's code (``replace_base_fc``,
       ``update_fc_avg``), the mean of the raw features (``prototype`` averages normalised ones).
    3. The Continually Evolved Classifier: a graph attention module G (``GraphAttention``: one-head
       self-attention, residual, layer norm) over the set of all seen classes' prototypes;
       logits_c(x) = temperature * cos(G(x), G(p_c)), temperature 16 as CEC. ``query_node=true``
       (default) follows the authors' code, where each query's feature is a node of the graph with
       the prototypes (``_forward``: ``cat([proto, query])`` through the attention; both adapted);
       ``query_node=false`` is the graph of classifiers alone, logits = T cos(phi(x), G(p_c)).
       Unseen classes score -inf.
    4. Pseudo-incremental meta-training of G alone, right after the base session (``after_task`` of
       task 0), on features computed once by the frozen backbone: for the base training images and
       their rotations by 90, 180 and 270 degrees (``torch.rot90`` on H, W; square images only).
       Each of ``episodes`` episodes, as CEC's ``base_train``: draw ``episode_ways`` base classes
       (CEC: 15; at most the number of base classes here), ``episode_shots`` + ``episode_queries``
       examples of each (CEC: 1 + 15). Pseudo-old classes: prototypes = mean feature of the
       episode's support (not the base classifier, as CEC); pseudo-new classes: the same classes
       with every example rotated by one angle drawn per class from {90, 180, 270} (CEC's
       ``replace_to_rotate``; its low_way = episode_way and low_shot = episode_shot, as here), the
       rotated support giving their prototypes. The queries of all 2 x ways classes go through the
       logits of 3. and the loss is the mean cross-entropy over the 2 x ways classes. Optimizer as
       CEC's attention parameters: SGD, momentum 0.9, Nesterov, weight decay 5e-4.
       Our choices: the backbone stays frozen (CEC also fine-tunes the encoder, lr 2e-4 - 2e-3);
       lr (CEC: 2e-4 over 100 epochs x 50 episodes = 5000 episodes, from a pretrained backbone)
       and episodes default to 0.05 and 500 here, a constant lr (CEC halves it every 20 epochs);
       dropout defaults to 0 (CEC declares 0.5 after the output map and 0.1 on the attention, but
       trains with the model in eval mode, so neither acts). Every draw (initialisation of G,
       classes, examples, angles) comes from the run's generator: a run is reproducible.
    5. Later sessions: the new classes get prototypes from their K shots; prediction is the argmax of
       3. over all seen classes (G is not trained again). Before the first prototype exists
       (evaluation before training) it predicts with the model's logits.
    """

    name = "cec"
    family = "fscil"
    scenarios = ("class",)
    help = (
        "CEC (FSCIL): frozen backbone after the base session, class prototypes adapted by a graph "
        "attention module meta-trained on rotated base classes; temperature-scaled cosine (class-IL)"
    )
    params = {
        "episodes": Param(500, ">=0", "pseudo-incremental episodes of meta-training after the base session"),
        "episode_ways": Param(
            15,
            ">=1",
            "base classes per episode (each also rotated into a pseudo-new class; at most the number of base classes)",
        ),
        "episode_shots": Param(1, ">=1", "support examples per class of an episode"),
        "episode_queries": Param(15, ">=1", "query examples per class of an episode"),
        "lr": Param(0.05, ">0", "learning rate of the attention module (SGD, momentum 0.9, Nesterov)"),
        "weight_decay": Param(5e-4, ">=0", "weight decay of the attention module"),
        "temperature": Param(16.0, ">0", "scale of the cosine logits"),
        "dropout": Param(0.0, "[0, 1)", "dropout in the attention module during meta-training"),
        "query_node": Param(True, help="the query's feature is a node of the classifiers' graph (CEC's code)"),
    }

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.prototypes_: torch.Tensor | None = None  # [n_outputs, d]; NaN rows: classes without one
        self.attn: GraphAttention | None = None
        self.meta_losses_: list[float] = []  # the loss of every meta-training episode

    # ---- checks -------------------------------------------------------------------------------
    @staticmethod
    def check_images(shape) -> None:
        shape = tuple(shape)
        if len(shape) != 3 or shape[1] != shape[2]:
            raise UsageError(
                f"cec rotates the base images by 90/180/270 degrees to make pseudo-new classes: it needs "
                f"square images [C, H, W], got input shape {shape}; use an image benchmark such as "
                f"split-mnist, or strategy prototype"
            )

    def before_task(self, ctx, task):
        if task.id == 0:
            self.check_images(ctx.benchmark.input_shape)
            if len(task.train):
                self.check_images(task.train.raw.shape[1:])
                counts = torch.bincount(task.train.y.cpu())
                need = self.episode_shots + self.episode_queries
                small = [c for c in task.classes if int(counts[c] if c < len(counts) else 0) < need]
                if small:
                    raise UsageError(
                        f"cec: base class {small[0]} has fewer than episode_shots + episode_queries = "
                        f"{need} training examples; lower episode_shots or episode_queries"
                    )

    def train_data(self, ctx, task):
        return super().train_data(ctx, task) if task.id == 0 else None

    # ---- prototypes and meta-training ---------------------------------------------------------
    def after_task(self, ctx, task):
        data = task.train
        if not len(data):
            return
        x = data.x
        phi = features(ctx.model, x).float()
        self.prototypes_ = add_class_means(self.prototypes_, phi, data.y, task.classes, ctx.benchmark.n_outputs)
        if task.id == 0 and self.attn is None:
            self.attn = GraphAttention(phi.shape[1], self.dropout, ctx.generator, phi.device)
            rotated = torch.stack(
                [phi] + [features(ctx.model, torch.rot90(x, k, dims=(2, 3))).float() for k in (1, 2, 3)]
            )  # [4, N, d]: 0, 90, 180, 270 degrees
            self.meta_train(rotated, data.y, task.classes, ctx.generator)

    def sample_episode(self, y: torch.Tensor, classes: list[int], generator: torch.Generator):
        """Indices of one episode (on the CPU): (rows [W, S + Q] of the examples of W drawn classes,
        angles [W] in 1..3 (x 90 degrees) of their pseudo-new copies)."""
        y = y.cpu()
        ways = min(self.episode_ways, len(classes))
        picked = torch.randperm(len(classes), generator=generator, device="cpu")[:ways]
        need = self.episode_shots + self.episode_queries
        rows = []
        for i in picked.tolist():
            members = torch.nonzero(y == classes[i]).flatten()
            rows.append(members[torch.randperm(len(members), generator=generator, device="cpu")[:need]])
        angles = torch.randint(1, 4, (ways,), generator=generator, device="cpu")
        return torch.stack(rows), angles

    def episode_loss(self, rotated: torch.Tensor, rows: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of one episode: ``rotated`` [4, N, d] features of the base data at 0/90/180/270
        degrees; W pseudo-old classes (unrotated) and W pseudo-new ones (rotated by ``angles``)."""
        dev = rotated.device
        rows, angles = rows.to(dev), angles.to(dev)
        old = rotated[0][rows]  # [W, S + Q, d]
        new = rotated[angles[:, None], rows]  # [W, S + Q, d]
        both = torch.cat([old, new])  # [2W, S + Q, d]
        s = self.episode_shots
        protos = both[:, :s].mean(1)
        queries = both[:, s:].reshape(-1, both.shape[-1])
        labels = torch.arange(len(both), device=dev).repeat_interleave(both.shape[1] - s)
        logits = cosine_logits(self.attn, protos, queries, self.temperature, self.query_node)
        return F.cross_entropy(logits, labels)

    def meta_train(self, rotated: torch.Tensor, y: torch.Tensor, classes: list[int], generator: torch.Generator):
        """Train the attention module alone on ``episodes`` pseudo-incremental episodes."""
        opt = torch.optim.SGD(
            self.attn.parameters(), lr=self.lr, momentum=0.9, nesterov=True, weight_decay=self.weight_decay
        )
        y = y.cpu()  # (episodes are drawn on the CPU, with the run's generator)
        self.attn.train()
        with torch.enable_grad(), torch.autocast(rotated.device.type, enabled=False):
            for _ in range(self.episodes):
                rows, angles = self.sample_episode(y, classes, generator)
                loss = self.episode_loss(rotated, rows, angles)
                opt.zero_grad()
                loss.backward()
                opt.step()
                self.meta_losses_.append(float(loss.detach()))
        self.attn.eval()

    # ---- prediction ---------------------------------------------------------------------------
    def predict(self, ctx, x):
        if self.prototypes_ is None or self.attn is None:
            return ctx.model(x)
        phi = features(ctx.model, x).float()
        seen = ~self.prototypes_.isnan().any(1)
        scores = torch.full((len(x), len(seen)), float("-inf"), device=phi.device)
        self.attn.eval()
        with torch.no_grad(), torch.autocast(phi.device.type, enabled=False):
            scores[:, seen] = cosine_logits(self.attn, self.prototypes_[seen], phi, self.temperature, self.query_node)
        return scores

    # ---- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        attn = None if self.attn is None else {k: v.detach().clone() for k, v in self.attn.state_dict().items()}
        return {"prototypes_": self.prototypes_, "attn_": attn, "meta_losses_": list(self.meta_losses_)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prototypes_ = state["prototypes_"]
        self.meta_losses_ = list(state.get("meta_losses_", []))
        weights = state["attn_"]
        if weights is None:
            self.attn = None
            return
        w = weights["w_q"]
        self.attn = GraphAttention(w.shape[0], self.dropout, device=w.device)
        self.attn.load_state_dict(weights)
        self.attn.eval()


__all__ = ["CEC", "GraphAttention", "cosine_logits"]
