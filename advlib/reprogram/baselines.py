"""The baselines of the reprogramming tables: what a practitioner would do instead.

* ``scratch``: the source architecture, randomly initialised, trained on the same (placed) target data
  (the lecture's "train from scratch" / TF_a column);
* ``linear_probe``: logistic regression on the frozen source model's last hidden layer (transfer by
  training the head only; the lecture's "fine-tuning" column at its cheapest);
* ``classical``: logistic regression on standardised features (tables) or 1-NN with Euclidean distance
  and with DTW (series; the UCR archive's reference classifiers).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import zoo
from ..data import ArrayDataset
from ..models import build
from ..threat import chunks
from ..train import fit

__all__ = ["scratch", "linear_probe", "dtw", "classical"]


def scratch(entry: str, x: torch.Tensor, y: torch.Tensor, n_classes: int, *, epochs: int = 200, lr: float = 2e-3,
            batch_size: int = 16, weight_decay: float = 1e-4, seed: int = 0) -> nn.Module:
    """The architecture of zoo ``entry`` with ``n_classes`` outputs, trained from random weights on ``(x, y)``
    (inputs of the source shape: place them with ``program.place``), Adam, cosine schedule. Eval mode."""
    if entry not in zoo.ENTRIES:
        raise ValueError(f"scratch: unknown zoo entry {entry!r}; known: {', '.join(zoo.ENTRIES)}")
    e = zoo.ENTRIES[entry]
    dims = [0] + list(range(2, x.dim()))
    torch.manual_seed(seed)
    model = build(e.arch, n_classes=n_classes, mean=x.mean(dims).tolist(),
                  std=x.std(dims).clamp_min(1e-3).tolist(), **e.arch_kwargs).to(x.device)
    ds = ArrayDataset(x, y, name="target", split="train", classes=[str(c) for c in range(n_classes)])
    fit(model, ds, None, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, seed=seed,
        device=x.device, progress=False)
    return model.eval()


@torch.no_grad()
def _features(model: nn.Sequential, x: torch.Tensor) -> np.ndarray:
    return model[:-1](x).flatten(1).cpu().numpy()


def linear_probe(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor,
                 y_test: torch.Tensor) -> float:
    """Test accuracy of an L2-regularised logistic regression (scikit-learn, C = 1) on the frozen
    ``model``'s last hidden layer (all but its final layer), inputs of the source shape."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    f, ft = _features(model, x), _features(model, x_test)
    scale = StandardScaler().fit(f)
    clf = LogisticRegression(max_iter=5000).fit(scale.transform(f), y.cpu().numpy())
    return float(clf.score(scale.transform(ft), y_test.cpu().numpy()))


def dtw(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dynamic time warping (Sakoe & Chiba 1978; no window) between every series of ``a`` (``N x L``) and of
    ``b`` (``M x L'``): ``D(i, j) = (a_i - b_j)^2 + min(D(i-1, j), D(i, j-1), D(i-1, j-1))``, the squared
    cost of the best monotone alignment. All ``N * M`` pairs advance together along the anti-diagonals
    ``i + j = k`` (the cells of one anti-diagonal depend only on the two before), the costs laid out by
    anti-diagonal once so that each step reads one slice. Returns ``N x M``."""
    n, m = a.shape[1], b.shape[1]
    rows = torch.arange(n, device=a.device)
    j = torch.arange(n + m - 1, device=a.device)[:, None] - rows[None]  # anti-diagonal k, row i -> column k - i
    skewed = b[:, j.clamp(0, m - 1)].masked_fill(~((j >= 0) & (j < m)), float("inf"))  # M x diagonals x rows
    out = torch.empty(len(a), len(b), device=a.device, dtype=a.dtype)
    for s in chunks(len(a), 2 * skewed.numel()):
        cost = (a[s, None, None, :] - skewed[None]) ** 2  # (rows of a) x M x diagonals x rows
        cost = cost.flatten(0, 1)
        inf = torch.full((len(cost), n + 1), float("inf"), device=a.device, dtype=a.dtype)
        before, last = inf.clone(), inf
        before[:, 0] = 0.0  # D(-1, -1) = 0 on the anti-diagonal k = -2; every other border cell is infinite
        for d in range(n + m - 1):
            best = torch.minimum(torch.minimum(last[:, :n], last[:, 1:]), before[:, :n])
            before, last = last, torch.cat([inf[:, :1], cost[:, d] + best], 1)
        out[s] = last[:, n].view(-1, len(b))
    return out


def classical(train: ArrayDataset, test: ArrayDataset) -> dict[str, float]:
    """Strong classical baselines on the raw target data: for series ``1-NN`` (Euclidean) and ``1-NN DTW``
    (in torch, :func:`dtw`); for anything else logistic regression on the (flattened, standardised) inputs
    as given, e.g. the breast-cancer task's encoded features."""
    x, y = train.x.flatten(1).cpu().numpy(), train.y.cpu().numpy()
    xt, yt = test.x.flatten(1).cpu().numpy(), test.y.cpu().numpy()
    if train.x.dim() == 3 and train.x.shape[1] == 1:
        d = ((xt[:, None] - x[None]) ** 2).sum(-1)
        warped = dtw(test.x.flatten(1), train.x.flatten(1)).cpu().numpy()
        return {"1-NN": float((y[d.argmin(1)] == yt).mean()), "1-NN DTW": float((y[warped.argmin(1)] == yt).mean())}
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scale = StandardScaler().fit(x)
    clf = LogisticRegression(max_iter=5000).fit(scale.transform(x), y)
    return {"logistic regression": float(clf.score(scale.transform(xt), yt))}
