"""A robustness evaluation that does not fool itself: AutoAttack's ensemble (Croce & Hein, ICML 2020,
"Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks").

Four attacks of different kinds run in sequence, each only on the points that are still robust
(correctly classified, and not broken by an earlier attack): APGD with cross-entropy
(:func:`~advlib.defenses.apgd.apgd`), APGD-T with the targeted DLR loss over the top-9 other
classes (:func:`~advlib.defenses.apgd.apgd_targeted`), FAB-T (:func:`~advlib.defenses.fab.fab_targeted`),
and the score-based black-box Square attack (:func:`advlib.blackbox.square`, through
:class:`advlib.blackbox.BlackBox`), which uses no gradient at all. A point is robust only if it
survives every attack (the per-point worst case), and every point counted as broken is confirmed
by a forward pass (adversarial, in the ball, in [0, 1]).

Square is the check on the others (Carlini et al. 2019, "On evaluating adversarial robustness"):
when a black-box attack breaks points the gradient attacks could not, the gradients are not
telling the truth about the model (gradient masking, obfuscated gradients), and the evaluation
says so (``masking`` and ``note``).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn
from tqdm.auto import tqdm

from ..threat import check_budget, check_count, check_inputs, chunks, parse_norm
from .apgd import apgd, apgd_targeted
from .fab import fab_targeted

__all__ = ["evaluate", "report", "Evaluation", "Report", "AttackResult", "ATTACKS", "WHITE_BOX"]


def _apgd_ce(model, x, y, *, eps, norm, steps, eot, seed, **_):
    return apgd(model, x, y, eps=eps, norm=norm, steps=steps, loss="ce", eot=eot, seed=seed)


def _apgd_dlr(model, x, y, *, eps, norm, steps, eot, seed, **_):
    return apgd(model, x, y, eps=eps, norm=norm, steps=steps, loss="dlr", eot=eot, seed=seed)


def _apgd_t(model, x, y, *, eps, norm, steps, eot, seed, classes, **_):
    return apgd_targeted(model, x, y, eps=eps, norm=norm, steps=steps, n_targets=min(9, classes - 1), eot=eot,
                         seed=seed)


def _fab_t(model, x, y, *, eps, norm, steps, seed, classes, **_):
    return fab_targeted(model, x, y, eps=eps, norm=norm, steps=steps, n_targets=min(9, classes - 1), seed=seed)


def _square(model, x, y, *, eps, norm, square_queries, seed, **_):
    from ..blackbox import BlackBox, square

    return square(BlackBox(model, output="scores"), x, y, eps=eps, queries=square_queries, p_init=0.8,
                  norm=norm, loss="margin", seed=seed)


#: the attacks :func:`evaluate` can run, by name (each ``fn(model, x, y, *, eps, norm, steps, eot, seed,
#: square_queries, classes)``, returning candidate points that :func:`evaluate` confirms)
ATTACKS = {"apgd-ce": _apgd_ce, "apgd-dlr": _apgd_dlr, "apgd-t": _apgd_t, "fab-t": _fab_t, "square": _square}
#: the attacks that use the model's gradients (the others only query it)
WHITE_BOX = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t")


class AttackResult(NamedTuple):
    """One attack's part in an :class:`Evaluation`."""

    #: robust accuracy after this attack (and the ones before it)
    robust_accuracy: float
    #: points this attack broke (confirmed), among those still robust when it ran
    broken: int
    #: points it was run on
    attacked: int
    #: wall-clock seconds
    seconds: float


@dataclass
class Evaluation:
    """The result of :func:`evaluate`. ``robust[i]``: point ``i`` is classified correctly and no attack
    broke it; ``x_adv[i]``: the adversarial point that broke it (``x[i]`` itself where none did);
    ``broken_by[i]``: the attack that broke it, ``"clean"`` if the clean point is misclassified, ``""``
    if robust. ``per_attack``: an :class:`AttackResult` per attack, in the order they ran."""

    clean_accuracy: float
    robust_accuracy: float
    robust: torch.Tensor
    x_adv: torch.Tensor
    broken_by: list[str]
    per_attack: dict[str, AttackResult]
    masking: bool
    note: str
    eps: float
    norm: str
    steps: int
    seconds: float
    n: int = field(default=0)

    def rows(self) -> list[tuple[str, float, int | str, float | str]]:
        """``(stage, accuracy, points broken, seconds)``: clean, after each attack, worst case."""
        out = [("clean", self.clean_accuracy, self.broken_by.count("clean"), "")]
        out += [(k, r.robust_accuracy, r.broken, r.seconds) for k, r in self.per_attack.items()]
        return out + [("worst case", self.robust_accuracy, "", self.seconds)]

    def table(self) -> str:
        """A printable table: accuracy after each stage, points each attack broke, seconds."""
        head = (f"{self.n} points, {self.norm} eps={self.eps:g}, {self.steps} steps")
        lines = [head, f"{'stage':<12} {'accuracy':>9} {'broken':>7} {'seconds':>8}"]
        for stage, acc, broken, sec in self.rows():
            sec = f"{sec:8.2f}" if sec != "" else f"{'':8}"
            lines.append(f"{stage:<12} {acc:9.1%} {broken!s:>7} {sec}")
        if self.note:
            lines.append(f"note: {self.note}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_frame(self):
        """The table as a pandas DataFrame (pandas is optional: ``pip install pandas``)."""
        pd = _pandas()
        return pd.DataFrame([{"stage": s, "accuracy": a, "broken": b if b != "" else None,
                              "seconds": t if t != "" else None} for s, a, b, t in self.rows()]).set_index("stage")

    def plot(self, ax=None):
        """Bar chart of the accuracy: clean, after each attack, and the worst case. Returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(min(1.1 * (len(self.per_attack) + 2) + 1.5, 9), 3.2))
        rows = self.rows()
        names = [r[0] for r in rows]
        accs = [100 * r[1] for r in rows]
        colors = ["0.6"] + ["C0"] * len(self.per_attack) + ["C3"]
        bars = ax.bar(names, accs, color=colors)
        for b, a in zip(bars, accs):
            ax.text(b.get_x() + b.get_width() / 2, a + 1, f"{a:.1f}", ha="center", va="bottom", fontsize=9)
        ax.set_ylim(0, 110)
        ax.set_ylabel("accuracy (%)", fontsize=10)
        ax.set_title(f"{self.norm} eps={self.eps:g}" + (" — gradient masking?" if self.masking else ""), fontsize=10)
        ax.tick_params(labelsize=9)
        return ax


def _pandas():
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("to_frame() needs pandas, which is not installed; pip install pandas, or use "
                          ".table() for a printable table") from None
    return pd


def _check_attacks(attacks, who: str) -> tuple[str, ...]:
    if isinstance(attacks, str):
        attacks = (attacks,)
    if not isinstance(attacks, Sequence) or len(attacks) == 0:
        raise ValueError(f"{who}: attacks must be a non-empty sequence of names from {tuple(ATTACKS)}, got {attacks!r}")
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"{who}: unknown attack(s) {unknown}; choose from {tuple(ATTACKS)}")
    if len(set(attacks)) != len(attacks):
        raise ValueError(f"{who}: attacks {tuple(attacks)} name one twice; run each once")
    return tuple(attacks)


def _predict(model, x):
    with torch.no_grad():
        return torch.cat([model(x[s]).argmax(1) for s in chunks(len(x), 64 * x[0].numel())])


def _confirm(model, x, x_adv, y, eps, norm) -> torch.Tensor:
    """Which of the candidates ``x_adv`` are adversarial (one forward pass), inside the ball (with
    a rounding slack of 1e-5) and inside [0, 1]."""
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    inside = (size <= eps + 1e-5) & (x_adv.flatten(1).amin(1) >= 0) & (x_adv.flatten(1).amax(1) <= 1)
    return inside & (_predict(model, x_adv) != y)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
             attacks: Sequence[str] = ("apgd-ce", "apgd-t", "fab-t", "square"), steps: int = 100,
             square_queries: int = 5000, eot: int = 1, seed: int | None = 0, progress: bool = True) -> Evaluation:
    """AutoAttack's standard ensemble (Croce & Hein 2020): ``attacks`` run in order, each only on the
    points still robust (misclassified clean points and points an earlier attack broke are skipped),
    the per-point worst case kept. Names (:data:`ATTACKS`): ``"apgd-ce"``, ``"apgd-dlr"``, ``"apgd-t"``
    (targeted DLR, top-9 classes), ``"fab-t"`` (top-9 classes), ``"square"`` (``square_queries``
    queries per point, ``p_init`` 0.8, margin loss). ``steps`` per APGD run and per FAB target;
    ``eot`` averages APGD's gradients over that many passes (randomised models). L-inf or L2 ball of
    radius ``eps`` intersected with [0, 1].

    Every point counted as broken is confirmed by a forward pass on its adversarial point (wrong
    label, inside the ball and [0, 1]). ``masking`` is set, with a ``note``, when Square breaks
    points that the gradient-based attacks before it did not (a sign of gradient masking).
    """
    who = "evaluate"
    classes = check_inputs(model, x, y, who=who, eps=eps, steps=steps, norm=norm)
    norm = parse_norm(norm, who, ("linf", "l2"))
    eps = check_budget(eps, who, positive=True)
    steps = check_count(steps, who, "steps", 1)
    square_queries = check_count(square_queries, who, "square_queries", 1)
    eot = check_count(eot, who, "eot", 1)
    if seed is not None:
        check_count(seed, who, "seed")
    attacks = _check_attacks(attacks, who)
    if "square" in attacks and x.dim() != 4:
        raise ValueError(f"{who}: Square needs image batches N x C x H x W, got shape {tuple(x.shape)}; "
                         "leave 'square' out of attacks for other inputs")
    start = time.perf_counter()
    x, y = x.detach(), y.detach()
    n = len(x)
    robust = _predict(model, x) == y
    clean_accuracy = robust.float().mean().item()
    broken_by = ["" if r else "clean" for r in robust.tolist()]
    x_adv = x.clone()
    per_attack: dict[str, AttackResult] = {}
    masking, note, white_ran = False, "", False
    bar = tqdm(attacks, desc="evaluate", disable=not progress, leave=False)
    for name in bar:
        bar.set_postfix_str(f"{name}, robust {robust.float().mean().item():.1%}")
        t0 = time.perf_counter()
        rows = robust.nonzero().squeeze(1)
        broke = 0
        if len(rows):
            cand = ATTACKS[name](model, x[rows], y[rows], eps=eps, norm=norm, steps=steps,
                                 square_queries=square_queries, eot=eot, seed=seed, classes=classes)
            hit = _confirm(model, x[rows], cand, y[rows], eps, norm)
            done = rows[hit]
            x_adv[done], robust[done] = cand[hit], False
            for i in done.tolist():
                broken_by[i] = name
            broke = int(hit.sum())
        if name not in WHITE_BOX and broke and white_ran:
            masking = True
            white = [a for a in attacks[: attacks.index(name)] if a in WHITE_BOX]
            note = (f"{name} (black box, no gradients) broke {broke} of the {len(rows)} points that "
                    f"{', '.join(white)} left robust. A few can be chance; more are the sign of masked or "
                    "obfuscated gradients: distrust the white-box figures and attack the defense adaptively "
                    "(BPDA, EOT)")
        white_ran = white_ran or name in WHITE_BOX
        per_attack[name] = AttackResult(robust.float().mean().item(), broke, len(rows), time.perf_counter() - t0)
    return Evaluation(clean_accuracy=clean_accuracy, robust_accuracy=robust.float().mean().item(), robust=robust,
                      x_adv=x_adv, broken_by=broken_by, per_attack=per_attack, masking=masking, note=note, eps=eps,
                      norm=norm, steps=steps, seconds=time.perf_counter() - start, n=n)


@dataclass
class Report:
    """Evaluations of several models under one threat model (:func:`report`)."""

    evaluations: dict[str, Evaluation]

    def table(self) -> str:
        """One row per model: clean accuracy, accuracy after each attack, worst case, seconds."""
        first = next(iter(self.evaluations.values()))
        stages = list(first.per_attack)
        width = max(12, *(len(k) for k in self.evaluations))
        head = f"{first.n} points, {first.norm} eps={first.eps:g}, {first.steps} steps"
        lines = [head, f"{'model':<{width}} {'clean':>7} " + " ".join(f"{s:>8}" for s in stages)
                 + f" {'worst':>7} {'seconds':>8}"]
        notes = []
        for name, ev in self.evaluations.items():
            lines.append(f"{name:<{width}} {ev.clean_accuracy:7.1%} "
                         + " ".join(f"{ev.per_attack[s].robust_accuracy:8.1%}" for s in stages)
                         + f" {ev.robust_accuracy:7.1%} {ev.seconds:8.1f}" + (" *" if ev.masking else ""))
            if ev.note:
                notes.append(f"* {name}: {ev.note}")
        return "\n".join(lines + notes)

    def __str__(self) -> str:
        return self.table()

    def to_frame(self):
        """The table as a pandas DataFrame (pandas is optional)."""
        pd = _pandas()
        return pd.DataFrame([{"model": k, "clean": ev.clean_accuracy,
                              **{s: r.robust_accuracy for s, r in ev.per_attack.items()},
                              "worst case": ev.robust_accuracy, "seconds": ev.seconds, "masking": ev.masking}
                             for k, ev in self.evaluations.items()]).set_index("model")

    def plot(self, ax=None):
        """Grouped bars: per model, clean accuracy, after each attack, worst case. Returns the axes."""
        import matplotlib.pyplot as plt

        first = next(iter(self.evaluations.values()))
        stages = ["clean", *first.per_attack, "worst case"]
        if ax is None:
            _, ax = plt.subplots(figsize=(min(1.6 * len(self.evaluations) + 2.5, 9), 3.8), layout="constrained")
        width = 0.8 / len(stages)
        colors = ["0.6"] + [f"C{i}" for i in range(len(stages) - 2)] + ["C3" if len(stages) < 6 else "k"]
        for j, stage in enumerate(stages):
            vals = [100 * (ev.clean_accuracy if stage == "clean" else ev.robust_accuracy if stage == "worst case"
                           else ev.per_attack[stage].robust_accuracy) for ev in self.evaluations.values()]
            pos = [i + (j - (len(stages) - 1) / 2) * width for i in range(len(vals))]
            ax.bar(pos, vals, width=width, label=stage, color=colors[j],
                   hatch="//" if stage == "worst case" else None, edgecolor="white" if stage == "worst case" else None)
        ax.set_xticks(range(len(self.evaluations)), list(self.evaluations), fontsize=9)
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)", fontsize=10)
        ax.set_title(f"{first.norm} eps={first.eps:g}", fontsize=10)
        ax.legend(fontsize=9, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
        ax.tick_params(labelsize=9)
        return ax


def report(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, *, eps: float, **kwargs) -> Report:
    """:func:`evaluate` each model of ``models`` (name -> model) on the same points under the same
    threat model (``kwargs``: the rest of :func:`evaluate`'s options). ``.table()`` prints one row per
    model, ``.plot()`` draws grouped bars."""
    if not isinstance(models, dict) or not models:
        raise ValueError("report: models must be a non-empty dict name -> model, e.g. {'standard': m1, 'pgd': m2}")
    return Report({name: evaluate(m, x, y, eps=eps, **kwargs) for name, m in models.items()})
