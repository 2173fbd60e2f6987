"""Classification heads as torch modules: linear or a small MLP with standardisation built in, trained with
AdamW on cached features (optimizer adamw, one head or a sweep), and the module LP-FT puts on the backbone.
A head's file is transferlab.heads.head_file's; the default linear probe (heads.linear_probe) is fitted
without torch."""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn
from torch.nn import functional as F

from transferlab.config.methods import Head
from transferlab.heads import head_file
from transferlab.heads.head_file import HeadFile
from transferlab.optim.schedules import warmup_cosine


class FeatureHead(nn.Module):
    """(x - mean) / std, then a linear layer or a one-hidden-layer MLP."""

    def __init__(self, in_dim: int, n_classes: int, kind: str = "linear", hidden_dim: int = 256):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        layers = ([nn.Linear(in_dim, n_classes)] if kind == "linear" else
                  [nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, n_classes)])
        self.net = nn.Sequential(*layers)
        self.config = {"in_dim": in_dim, "n_classes": n_classes, "kind": kind, "hidden_dim": hidden_dim}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)

    def folded(self) -> nn.Sequential:
        """The same function without the standardisation step, folded into the first linear layer
        (what LP-FT puts on top of the backbone)."""
        net = nn.Sequential(*[type(m)() if not isinstance(m, nn.Linear) else
                              nn.Linear(m.in_features, m.out_features) for m in self.net])
        net.load_state_dict(self.net.state_dict())
        first = net[0]
        with torch.no_grad():
            first.bias += -(first.weight * (self.mean / self.std)).sum(1)
            first.weight /= self.std
        return net


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch ops on one intra-op thread, and BLAS (numpy, scikit-learn) too: heads are many tiny ops, and on
    a busy machine OpenMP's spin-waiting made a 0.5 s head take 11 s with two threads (measured); the few-shot
    fits (transferlab.evaluation.fewshot) were 8-25x slower with two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before)


def train(x: np.ndarray, y: np.ndarray, n_classes: int, cfg: Head, seed: int) -> tuple[FeatureHead, dict]:
    """Fit a head on features with AdamW + warmup-cosine (full fp32 on CPU; features are small)."""
    with one_thread():
        return _train(x, y, n_classes, cfg, seed)


def _train(x: np.ndarray, y: np.ndarray, n_classes: int, cfg: Head, seed: int) -> tuple[FeatureHead, dict]:
    torch.manual_seed(seed)
    xt, yt = torch.as_tensor(np.asarray(x, np.float32)), torch.as_tensor(y, dtype=torch.long)
    head = FeatureHead(xt.shape[1], n_classes, cfg.kind, cfg.hidden_dim)
    if cfg.standardize:
        head.mean.copy_(xt.mean(0))
        std = xt.std(0, correction=0)  # StandardScaler's (population) std; a constant feature keeps scale 1
        head.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = -(-len(xt) // cfg.batch_size)
    sched = warmup_cosine(opt, cfg.epochs * steps)
    gen = torch.Generator().manual_seed(seed)
    loss_fn, start = nn.CrossEntropyLoss(), time.perf_counter()
    head.train()
    for _ in range(cfg.epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(cfg.batch_size):
            loss = loss_fn(head(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    head.eval()
    return head, {"seconds": time.perf_counter() - start, "final_train_loss": loss.item()}


def to_file(head: FeatureHead) -> HeadFile:
    """The head as its file holds it (transferlab.heads.head_file): config and float32 state, for numpy."""
    return HeadFile(dict(head.config), {k: v.detach().numpy().copy() for k, v in head.state_dict().items()})


# ---- a sweep: many heads trained together ---------------------------------------------------------------

def train_sweep(x: np.ndarray, y: np.ndarray, n_classes: int, cfgs: list[Head],
                seed: int) -> tuple[list[FeatureHead], dict]:
    """Train every head of `cfgs` (e.g. Head.grid()) in one pass: each shuffled batch feeds all of them. Head i
    gets train(x, y, n_classes, cfgs[i], seed)'s init, batches, schedule and AdamW arithmetic, so it is that
    head up to float32 rounding: the heads' products, done side by side, round differently (logits within
    ~1e-5 after 100 epochs on the digits features, the same predictions). A bit-identical formulation (one
    small product per head, log-softmax row by row) took ~1.4x the CPU time of this one for 12 linear heads."""
    shared = {(c.epochs, c.batch_size, c.standardize, c.hidden_dim) for c in cfgs}
    if len(shared) != 1:
        raise ValueError("heads trained together share epochs, batch_size, standardize and hidden_dim")
    with one_thread():
        return _train_sweep(x, y, n_classes, cfgs, seed)


def _train_sweep(x: np.ndarray, y: np.ndarray, n_classes: int, cfgs: list[Head],
                 seed: int) -> tuple[list[FeatureHead], dict]:
    cfg = cfgs[0]
    xt, yt = torch.as_tensor(np.asarray(x, np.float32)), torch.as_tensor(y, dtype=torch.long)
    mean, std = torch.zeros(xt.shape[1]), torch.ones(xt.shape[1])
    if cfg.standardize:  # fitted on train once, shared by every head
        mean, s = xt.mean(0), xt.std(0, correction=0)  # as StandardScaler (and linear_probe, reference)
        std = torch.where(s > 1e-6, s, torch.ones_like(s))
    z = (xt - mean) / std
    stacks = []  # (the heads of one kind, stacked; their indices in cfgs)
    for kind in dict.fromkeys(c.kind for c in cfgs):
        members = [i for i, c in enumerate(cfgs) if c.kind == kind]
        inits = []
        for _ in members:  # every head starts where train() would start it: the same seed, the same init
            torch.manual_seed(seed)
            inits.append(FeatureHead(xt.shape[1], n_classes, kind, cfg.hidden_dim))
        stacks.append((_Stack(inits), members))
    opt = _StackedAdamW([(list(st.params), [cfgs[i] for i in members]) for st, members in stacks])
    steps = -(-len(xt) // cfg.batch_size)
    factor = _schedule(cfg.epochs * steps)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(cfg.epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(cfg.batch_size):
            zb = z.index_select(0, idx)
            logits = [st(zb) for st, _ in stacks]  # each (B, heads of a kind, classes)
            logits = logits[0] if len(logits) == 1 else torch.cat(logits, dim=1)
            # classes in dim 1, heads last: log-softmax then runs vectorised across heads (3x faster here)
            losses = F.cross_entropy(logits.transpose(1, 2), yt[idx, None].expand(-1, len(cfgs)),
                                     reduction="none")
            opt.zero_grad()
            # the sum of each head's mean loss: each head's gradient is that of its own loss
            (losses.sum() / len(idx)).backward()
            opt.step(next(factor))
    seconds = time.perf_counter() - start
    trained, final_loss = [None] * len(cfgs), [0.0] * len(cfgs)
    last = iter(losses.detach().mean(0).tolist())
    for st, members in stacks:
        for j, i in enumerate(members):
            trained[i], final_loss[i] = st.export(j, mean, std), next(last)
    return trained, {"seconds": seconds, "final_train_loss": final_loss}


def _schedule(total_steps: int) -> Iterator[float]:
    """warmup_cosine's factor for each step, from the scheduler's own function, so the lr matches train()'s."""
    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    factor = warmup_cosine(dummy, total_steps).lr_lambdas[0]
    return (factor(step) for step in range(total_steps))


class _Stack(nn.Module):
    """H heads of one kind as stacked parameters (H, out, in) and (H, out). A batch goes through every head's
    first layer as one matrix product (the heads' weights side by side, and so their gradient too), through
    the mlp's second layer as one batched product."""

    def __init__(self, heads: list[FeatureHead]):
        super().__init__()
        layers = [[m for m in h.net if isinstance(m, nn.Linear)] for h in heads]
        self.params = nn.ParameterList()
        for k in range(len(layers[0])):
            self.params.append(torch.stack([ls[k].weight.detach() for ls in layers]))
            self.params.append(torch.stack([ls[k].bias.detach() for ls in layers]))
        self.config = heads[0].config

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, in) -> logits (B, H, classes)."""
        w, b = self.params[0], self.params[1]
        out = F.linear(z, w.flatten(0, 1), b.flatten()).view(len(z), len(w), -1)
        if len(self.params) == 4:
            w2, b2 = self.params[2], self.params[3]
            out = torch.baddbmm(b2.unsqueeze(1), torch.relu(out).transpose(0, 1), w2.transpose(1, 2))
            out = out.transpose(0, 1)
        return out

    def export(self, j: int, mean: torch.Tensor, std: torch.Tensor) -> FeatureHead:
        head = FeatureHead(**self.config)
        linears = [m for m in head.net if isinstance(m, nn.Linear)]
        with torch.no_grad():
            head.mean.copy_(mean)
            head.std.copy_(std)
            for k, lin in enumerate(linears):
                lin.weight.copy_(self.params[2 * k][j])
                lin.bias.copy_(self.params[2 * k + 1][j])
        return head.eval()


class _StackedAdamW:
    """torch.optim.AdamW on stacked parameters whose first dim is the head, each head with its own lr and
    weight decay, in a handful of tensor ops per step whatever the number of heads.

    Why not torch.optim.AdamW with one param group per head: that needs one tensor per head, so every step
    pays H times the optimiser's per-tensor ops and Python overhead, plus a torch.stack of the weights for the
    batched forward. Measured (12 linear heads, 630 x 512 features, 10 classes, 100 epochs, one thread): 1.08 s
    of CPU with param groups, 0.62 s with this. The arithmetic is AdamW's single-tensor CPU path step for step
    (same float32 ops in the same order, the per-head scalars computed in float64 as Python computes them)."""

    def __init__(self, stacks: list[tuple[list[torch.Tensor], list[Head]]], betas=(0.9, 0.999),
                 eps: float = 1e-8):
        self.stacks, self.betas, self.eps, self.t = [], betas, eps, 0
        for params, cfgs in stacks:
            lr = torch.tensor([c.lr for c in cfgs], dtype=torch.float64)
            wd = torch.tensor([c.weight_decay for c in cfgs], dtype=torch.float64)
            self.stacks.append(([(p, torch.zeros_like(p), torch.zeros_like(p)) for p in params], lr, wd))

    def zero_grad(self) -> None:
        for params, _, _ in self.stacks:
            for p, _, _ in params:
                p.grad = None

    @torch.no_grad()
    def step(self, factor: float) -> None:
        (b1, b2), self.t = self.betas, self.t + 1
        bc1, bc2_sqrt = 1 - b1 ** self.t, (1 - b2 ** self.t) ** 0.5
        for params, base_lr, wd in self.stacks:
            lr = base_lr * factor  # what LambdaLR gives each param group
            decay, neg_step = (1 - lr * wd).float(), (-(lr / bc1)).float()
            for p, m, v in params:
                shape = (-1,) + (1,) * (p.dim() - 1)
                p.mul_(decay.view(shape))  # an exact no-op where wd is 0, as AdamW's skip
                m.lerp_(p.grad, 1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                denom = (v.sqrt() / bc2_sqrt).add_(self.eps)
                # addcdiv_(m, denom, value=-step) computes (value * m) / denom on CPU: the same rounding
                p.addcdiv_(m * neg_step.view(shape), denom)


def load(path: Path) -> FeatureHead:
    """The torch module of a head file (LP-FT starts from it)."""
    saved = head_file.load(path)
    head = FeatureHead(**saved.config)
    head.load_state_dict({k: torch.from_numpy(v) for k, v in saved.tensors.items()})
    return head.eval()
