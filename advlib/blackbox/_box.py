"""The black box: a model behind an API that answers queries and counts them.

Every attack of Part 2 talks to the model only through :class:`BlackBox`. It answers a batch of
inputs with probabilities (``output="scores"``, the soft-label threat model) or only the top-1 label
(``output="label"``, the hard-label threat model); a batch of ``n`` inputs costs ``n`` queries; its
answers carry no autograd graph, and an input that asks for a gradient is refused. A run of an attack
opens a :class:`QueryLog` (:meth:`BlackBox.start`) that charges every query to the example it was
made for and keeps, per example, the queries used in total, until the first success, and the best
distortion reached within any number of queries: the one form in which every black-box attack
reports its cost.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..threat import check_batch, check_count, check_input_shape, chunks, lp_norm, parse_norm, require_eval

__all__ = ["BlackBox", "QueryLog", "QueryBudgetExceeded", "OUTPUTS"]

OUTPUTS = ("scores", "label")


class QueryBudgetExceeded(RuntimeError):
    """A query would go past the black box's total or per-example budget."""


class QueryLog:
    """The cost and the progress of one attack run on ``n`` examples, per example.

    * ``queries[i]``: queries charged to example ``i`` so far;
    * ``first_success[i]``: queries example ``i`` had used when the attack first held an adversarial
      input for it (``-1`` while it has none);
    * ``best[i]``: the smallest ``norm`` distortion of an adversarial input recorded for it (``inf``
      while none); :meth:`distortion_at` gives the same within a query budget, from one run.

    Attacks call :meth:`record` whenever their iterates change; the black box charges the queries.
    """

    def __init__(self, x0: torch.Tensor, norm: str = "l2", allowance: int | None = None):
        n, dev = len(x0), x0.device
        self.x0, self.norm, self.allowance = x0, parse_norm(norm, "QueryLog"), allowance
        self.queries = torch.zeros(n, dtype=torch.long, device=dev)
        self.first_success = torch.full((n,), -1, dtype=torch.long, device=dev)
        self.best = torch.full((n,), math.inf, device=dev)
        self._trace: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __len__(self) -> int:
        return len(self.queries)

    @property
    def success(self) -> torch.Tensor:
        """Whether the attack held an adversarial input for each example at some point."""
        return self.first_success >= 0

    def remaining(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Queries each example may still use under the run's allowance (a large number if none)."""
        left = (torch.full_like(self.queries, 2 ** 62) if self.allowance is None
                else self.allowance - self.queries)
        return left if ids is None else left[ids]

    def record(self, ids: torch.Tensor, x_adv: torch.Tensor, adversarial: torch.Tensor) -> None:
        """The attack now holds ``x_adv[k]`` for example ``ids[k]``, adversarial where ``adversarial[k]``."""
        ids = torch.as_tensor(ids, device=self.queries.device).flatten()
        hit = adversarial.to(self.queries.device).bool().flatten()
        if hit.any():
            i = ids[hit]
            d = lp_norm((x_adv[hit] - self.x0[i]).flatten(1), self.norm).to(self.best.dtype)
            self.best[i] = torch.minimum(self.best[i], d)
            new = self.first_success[i] < 0
            self.first_success[i[new]] = self.queries[i[new]]
        self._trace.append((self.queries.clone(), self.best.clone()))

    def distortion_at(self, budget: int) -> torch.Tensor:
        """Per example, the smallest distortion of an adversarial input recorded within ``budget`` queries
        (``inf`` where there was none by then)."""
        if not self._trace:
            return torch.full_like(self.best, math.inf)
        q = torch.stack([t[0] for t in self._trace])
        b = torch.stack([t[1] for t in self._trace])
        return torch.where(q <= budget, b, torch.full_like(b, math.inf)).amin(0)

    def summary(self) -> dict:
        """Success rate, mean queries to first success (over successes), mean queries in total and
        the median best distortion (over successes)."""
        ok = self.success
        return {"success_rate": ok.float().mean().item(),
                "mean_queries_to_success": self.first_success[ok].float().mean().item() if ok.any() else math.nan,
                "mean_queries": self.queries.float().mean().item(),
                f"median_{self.norm}": self.best[ok].median().item() if ok.any() else math.nan}

    def __repr__(self) -> str:
        s = self.summary()
        return (f"QueryLog({len(self)} examples, success {s['success_rate']:.1%}, "
                f"{s['mean_queries_to_success']:.0f} queries to first success on average, "
                f"{s['mean_queries']:.0f} in total, median {self.norm} {s[f'median_{self.norm}']:.3g})")


class BlackBox:
    """``model`` behind an API: answers only with probabilities or only with the top-1 label.

    ``output="scores"`` returns softmax probabilities ``N x K`` (soft label, the threat model of
    ZOO, AutoZOOM, NES, Bandits and Square); ``output="label"`` returns the top-1 labels ``N`` (hard
    label: Boundary, OPT, Sign-OPT). Every input answered is a query: ``queries`` counts them all.
    ``budget`` caps that total, ``per_example`` caps the queries of one example within an attack run
    (:meth:`start`); a query past either raises :class:`QueryBudgetExceeded`. Inputs must lie in
    ``bounds`` (images: ``[0, 1]``; ``None`` for series, which only have to be finite); answers are
    computed without autograd and an input with ``requires_grad`` is refused:
    a black box gives no gradients, so an attack written against it cannot use one.
    """

    def __init__(self, model: nn.Module, output: str = "scores", budget: int | None = None, *,
                 per_example: int | None = None, bounds: tuple[float, float] | None = (0.0, 1.0)):
        if not isinstance(model, nn.Module):
            raise ValueError(f"BlackBox: model must be a torch.nn.Module, got {type(model).__name__}")
        if output not in OUTPUTS:
            raise ValueError(f"BlackBox: output must be one of {OUTPUTS} (probabilities or the top-1 label), "
                             f"got {output!r}")
        self.__model = model
        self.output = output
        if bounds is not None and (len(bounds) != 2 or not bounds[0] < bounds[1]):
            raise ValueError(f"BlackBox: bounds must be (low, high) with low < high, or None, got {bounds!r}")
        self.bounds = bounds
        self.budget = None if budget is None else check_count(budget, "BlackBox", "budget", 1)
        self.per_example = None if per_example is None else check_count(per_example, "BlackBox", "per_example", 1)
        self.queries = 0
        self.log: QueryLog | None = None
        self.in_shape = getattr(model, "in_shape", None)
        p = next(model.parameters(), None)
        self.device = p.device if p is not None else torch.device("cpu")
        self._per_item: int | None = None
        #: the number of classes, known after the first answer (an API's documentation says it)
        self.n_classes: int | None = None

    def __repr__(self) -> str:
        caps = [f"budget={self.budget}"] if self.budget else []
        caps += [f"per_example={self.per_example}"] if self.per_example else []
        return f"BlackBox(output={self.output!r}, queries={self.queries}{', ' if caps else ''}{', '.join(caps)})"

    # ------------------------------------------------------------------ runs
    def start(self, x0: torch.Tensor, *, norm: str = "l2", queries: int | None = None) -> QueryLog:
        """Open the query log of an attack run on the examples ``x0`` (distortions in ``norm``); the run
        may use ``queries`` per example (capped by ``per_example``). Returns it; also ``self.log``."""
        allowance = queries if self.per_example is None else min(queries or self.per_example, self.per_example)
        self.log = QueryLog(x0.detach(), norm, allowance)
        return self.log

    # ------------------------------------------------------------------ queries
    def __call__(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The answers to the queries ``x`` (probabilities or labels, by ``output``). ``ids[k]`` names
        the example of the open run that query ``k`` is made for (charged to it)."""
        out = self._answer(x, ids)
        return out.argmax(1) if self.output == "label" else out

    def label(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The top-1 labels of ``x``: what a hard-label attack may see (either kind of box answers it)."""
        return self._answer(x, ids).argmax(1)

    def scores(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The probabilities of ``x``; a hard-label box refuses."""
        if self.output != "scores":
            raise ValueError("this BlackBox answers only with labels (output='label'); a score-based attack needs "
                             "BlackBox(model, output='scores')")
        return self._answer(x, ids)

    def _answer(self, x: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and x.requires_grad:
            raise RuntimeError("BlackBox: a black box gives no gradients; query it with a tensor that does not "
                               "require grad (x.detach()) and estimate gradients from its answers (advlib.zo)")
        lo, hi = self.bounds if self.bounds is not None else (None, None)
        check_batch(x, "BlackBox", x_min=lo, x_max=hi)
        if self.in_shape is not None:
            check_input_shape(self.__model, x, "BlackBox")
        n = len(x)
        if self.budget is not None and self.queries + n > self.budget:
            raise QueryBudgetExceeded(f"BlackBox: these {n} queries would exceed the budget of {self.budget} "
                                      f"({self.queries} used); give the attack fewer queries or raise the budget")
        if ids is not None:
            ids = self._charge(torch.as_tensor(ids, device=self.log.queries.device if self.log else None), n)
        require_eval(self.__model, "BlackBox")
        x = x.detach().to(self.device)
        with torch.no_grad():
            first = [] if self._per_item else [self._measure(x[:64])]  # the first answers size the chunks
            rest = x[len(first[0]):] if first else x
            p = torch.cat(first + [F.softmax(self.__model(rest[s]), 1) for s in chunks(len(rest), self._per_item)])
        self.queries += n
        self.n_classes = p.shape[1]
        if ids is not None:
            self.log.queries.index_add_(0, ids, torch.ones_like(ids))
        return p

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        """Answer ``x`` while counting the floats of every layer's output (the ``per_item`` of
        :func:`advlib.threat.chunks` for the later answers): no evaluation is made that is not a query."""
        total = [x[0].numel()]

        def count(module, inputs, output):
            if isinstance(output, torch.Tensor):
                total[0] += output[0].numel()

        leaves = [m for m in self.__model.modules() if next(m.children(), None) is None]
        hooks = [m.register_forward_hook(count) for m in leaves]
        try:
            p = F.softmax(self.__model(x), 1)
        finally:
            for h in hooks:
                h.remove()
        self._per_item = total[0]
        return p

    def _charge(self, ids: torch.Tensor, n: int) -> torch.Tensor:
        if self.log is None:
            raise ValueError("BlackBox: queries with ids need an open run; call blackbox.start(x0) first")
        ids = ids.flatten().long()
        if len(ids) != n or (n and (ids.min() < 0 or ids.max() >= len(self.log))):
            raise ValueError(f"BlackBox: ids must give, for each of the {n} queries, an example 0..{len(self.log) - 1} "
                             f"of the open run")
        if self.log.allowance is not None:
            after = self.log.queries + torch.bincount(ids, minlength=len(self.log))
            over = after > self.log.allowance
            if over.any():
                i = int(over.nonzero()[0])
                raise QueryBudgetExceeded(f"BlackBox: example {i} would use {int(after[i])} queries, over "
                                          f"its budget of {self.log.allowance} per example")
        return ids
