"""The holistic robustness report: one model, one threat model, every lens of the course at once.

:func:`robustness_report` runs, on the same points and under the same L-inf or L2 ball,

* **penetration testing** — the white-box ensemble of :func:`advlib.defenses.evaluate` (APGD-CE,
  APGD-T, FAB-T; Croce & Hein 2020) and a query-limited black-box attack through
  :class:`advlib.blackbox.BlackBox` (Square for images, Andriushchenko et al. 2020; NES for other
  inputs, Ilyas et al. 2018), and their per-point worst case, an *upper* bound on the robust accuracy;
* **certificate** — CROWN's certified accuracy (:func:`advlib.verify.certify`, Zhang et al. 2018), a
  *lower* bound, where the architecture allows (else the reason it does not); per point,
  the certified radius next to the CLEVER score (:func:`advlib.verify.clever`, Weng et al. 2018), an
  estimate of the minimal distortion that is not a bound;
* **monitoring** — optionally a Trojan scan, DL-TND (:func:`advlib.backdoor.dl_tnd`, Wang et al.
  2020) on one trusted clean sample per class, judged against a threshold calibrated on clean models.

The result, a :class:`RobustnessReport`, renders as a table and a figure in a notebook, prints as
text, and writes itself as one standalone HTML file (:meth:`RobustnessReport.to_html`: inline CSS
and SVG, nothing fetched from anywhere). :func:`compare` puts several reports side by side.
"""
from __future__ import annotations

import html
import io
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .threat import check_batch, check_budget, check_count, check_labels, parse_norm, require_eval

__all__ = ["robustness_report", "RobustnessReport", "compare", "Comparison"]

_CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:60rem;margin:2rem auto;
color:#222;padding:0 1rem} table.advlib-report{border-collapse:collapse;margin:.5rem 0 1rem}
table.advlib-report td,table.advlib-report th{padding:.25rem .7rem;border-bottom:1px solid #ddd;text-align:left}
table.advlib-report td.num{text-align:right;font-variant-numeric:tabular-nums}
.advlib-note{color:#555;font-size:.9em}"""


@dataclass
class RobustnessReport:
    """What :func:`robustness_report` measured. Accuracies are fractions of the ``n`` points;
    ``certified`` is ``None`` (with ``certified_note`` saying why) where CROWN does not apply."""

    name: str
    n: int
    eps: float
    norm: str
    clean: float
    white_box: float
    black_box: float
    worst_case: float
    certified: float | None
    certified_note: str
    black_box_attack: str
    queries: int
    queries_to_success: float        #: mean queries of the black-box attack's successes (nan if none)
    clever: torch.Tensor             #: CLEVER scores of the first correctly classified points
    radius: torch.Tensor | None      #: CROWN's certified radii of the same points
    trojan: dict | None              #: ``{"score", "threshold", "flagged", "target"}`` or None (no scan)
    #: per point (bool, N): ``"clean"`` (classified correctly), ``"white box"``, ``"black box"``, ``"worst case"``
    #: (not broken by that attack / by any) and ``"certified"`` (where CROWN applies)
    masks: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)  #: time of each part, and ``"total"``
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str, str, str]]:
        """``(lens, short name, measurement, value)``: the table, in the roadmap's order."""
        pct = "{:.1%}".format
        ball = f"{self.norm} ε = {self.eps:g}"
        out = [("accuracy", "clean", f"clean, {self.n} points", pct(self.clean)),
               ("penetration testing", "white box", f"white box (APGD-CE, APGD-T, FAB-T), {ball}", pct(self.white_box)),
               ("penetration testing", "black box",
                f"black box ({self.black_box_attack}, ≤ {self.queries} queries), {ball}", pct(self.black_box)),
               ("penetration testing", "worst case", "worst case of both: robust accuracy ≤", pct(self.worst_case)),
               ("certificate", "certified", f"CROWN certified, {ball}: robust accuracy ≥",
                pct(self.certified) if self.certified is not None else f"n/a ({self.certified_note})")]
        if len(self.clever):
            out.append(("certificate", "CLEVER (median)",
                        f"median CLEVER score ({len(self.clever)} points; an estimate, not a bound)",
                        f"{self.clever.median().item():.3g}"))
        if self.radius is not None and len(self.radius):
            out.append(("certificate", "certified radius (median)",
                        f"median certified radius (the same {len(self.radius)} points)",
                        f"{self.radius.median().item():.3g}"))
        if self.trojan is not None:
            t = self.trojan
            verdict = ("no threshold" if t["threshold"] is None else
                       f"{'flagged' if t['flagged'] else 'not flagged'} (threshold {t['threshold']:.3g})")
            out.append(("monitoring", "Trojan scan (DL-TND)",
                        f"DL-TND Trojan scan: score {t['score']:.3g}, label {t['target']}",
                        f"{t['score']:.3g}, {verdict}"))
        return out

    def __str__(self) -> str:
        width = max(len(m) for _, _, m, _ in self.rows())
        lines = [f"{self.name}: holistic robustness report ({self.seconds.get('total', 0):.0f} s)"]
        lines += [f"  {lens:<20} {m:<{width}}  {v}" for lens, _, m, v in self.rows()]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])

    def figure(self):
        """Left: the sandwich — clean, black-box, white-box and worst-case accuracy above the
        certified one (one shared 0–100 % axis). Right: per point, the certified radius (a proven
        lower bound on the minimal distortion) and the CLEVER score (an estimate of it) against the
        radius ε of the threat model."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(9, 2.8), layout="constrained")
        ax, bx = fig.subplots(1, 2, width_ratios=(1.3, 1))
        labels = ["clean", "black box", "white box", "worst case", "certified"]
        values = [self.clean, self.black_box, self.white_box, self.worst_case, self.certified]
        colors = ["#888888", "#4c72b0", "#dd8452", "#c44e52", "#55a868"]
        for i, (v, c) in enumerate(zip(values, colors)):
            if v is None:
                ax.text(1, i, "n/a", va="center", fontsize=9, color="#555")
                continue
            ax.barh(i, 100 * v, color=c)
            ax.text(100 * v + 1, i, f"{v:.0%}", va="center", fontsize=9)
        ax.set_yticks(range(len(labels)), labels), ax.invert_yaxis()
        ax.set_xlim(0, 112), ax.set_xlabel("accuracy (%)")
        ax.set_title(f"{self.name}: {self.norm} ε = {self.eps:g}, {self.n} points", fontsize=10)
        k = len(self.clever)
        if k:
            idx = torch.arange(k)
            bx.scatter(self.clever, idx, marker="o", color="#8172b3", label="CLEVER score")
            if self.radius is not None:
                bx.scatter(self.radius, idx, marker="s", color="#55a868", label="certified radius")
            bx.axvline(self.eps, color="k", ls="--", lw=1, label="ε")
            bx.set_yticks(range(k), [str(i) for i in range(k)])
            bx.set_xlabel(f"{self.norm} distance"), bx.set_ylabel("point")
            top = max([self.eps, *self.clever.tolist(), *([] if self.radius is None else self.radius.tolist())])
            bx.set_xlim(0, 1.25 * top), bx.set_ylim(k - 0.5, -0.5), bx.legend(fontsize=8, loc="upper left")
            bx.set_title("per point: certified radius (a bound), CLEVER (an estimate)", fontsize=10)
        else:
            bx.set_axis_off()
        return fig

    def _table_html(self) -> str:
        body = "".join(f"<tr><td>{html.escape(lens)}</td><td>{html.escape(m)}</td><td class='num'>{html.escape(v)}"
                       "</td></tr>" for lens, _, m, v in self.rows())
        notes = "".join(f"<p class='advlib-note'>{html.escape(n)}</p>" for n in self.notes)
        return (f"<table class='advlib-report'><thead><tr><th>lens</th><th>measurement</th><th>value</th></tr>"
                f"</thead><tbody>{body}</tbody></table>{notes}")

    def _repr_html_(self) -> str:
        return f"<div><strong>{html.escape(self.name)}</strong>{self._table_html()}{_svg(self.figure())}</div>"

    def to_html(self, path: str | Path) -> Path:
        """Write the report as one standalone HTML page (inline CSS and SVG: opens offline)."""
        return _page(path, f"Robustness report: {self.name}", self._repr_html_())


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    svg = re.sub(r"<metadata>.*?</metadata>|<!--.*?-->", "", svg[svg.index("<svg"):], flags=re.S)
    return svg  # inline: without the XML prologue, doctype, comments and metadata


def _page(path, title: str, body: str) -> Path:
    path = Path(path)
    path.write_text(f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}"
                    f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n",
                    encoding="utf-8")
    return path


def _crown(model, x, y, eps, norm, candidates, points):
    """CROWN's certified accuracy over all of ``x`` and certified radii of ``points``, or the reason
    the network cannot be bounded. Only ``candidates`` (the points no attack broke) are bounded: a
    point an attack broke cannot be certified by a sound method, so the others count as uncertified."""
    from . import verify

    got, radius = torch.zeros(len(x), dtype=torch.bool, device=x.device), torch.empty(0)
    try:
        if len(candidates):
            got[candidates] = verify.certify(model, x[candidates], y[candidates], eps=eps, norm=norm, method="crown")
        if len(points):
            radius = verify.certified_radius(model, x[points], y[points], norm=norm, method="crown")
    except ValueError as e:
        if "cannot bound" not in str(e):
            raise
        return None, None, str(e).split(";")[0].replace("advlib.verify ", "")
    return got, radius, ""


def robustness_report(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
                      name: str | None = None, steps: int = 100, queries: int = 1000, clever_points: int = 3,
                      clever_batches: int = 10, clever_batch_size: int = 64, trusted=None,
                      trojan_threshold: float | None = None, seed: int = 0) -> RobustnessReport:
    """Every lens of the course on one model (see the module's docstring), on the points ``x, y``
    under the ``norm`` ball (``"linf"`` or ``"l2"``) of radius ``eps``.

    ``steps``: iterations of each white-box attack; ``queries``: the black-box attack's budget per
    point; ``clever_points``: CLEVER scores and certified radii of the first that many correctly
    classified points, with CLEVER's ``clever_batches`` x ``clever_batch_size`` samples; ``trusted``:
    clean ``(x, y)``, one sample per class, for a DL-TND Trojan scan (None: no scan), flagged above
    ``trojan_threshold`` (choose it on clean models, :func:`advlib.backdoor.calibrate`).

    ``certified <= worst_case`` holds by the soundness of CROWN (a certified point is one no attack
    can break); the report uses it to bound only the points the attacks left standing, and the
    tests check that this gives CROWN's certified accuracy over all points.
    """
    from . import backdoor, blackbox, defenses, verify
    from .train import predict

    who = "robustness_report"
    if not isinstance(model, nn.Module):
        raise ValueError(f"{who}: model must be a torch.nn.Module, got {type(model).__name__}")
    require_eval(model, who)
    check_batch(x, who)  # in [0, 1]: the report's threat model is a ball inside the image box
    check_labels(y, len(x), None, who)
    norm = parse_norm(norm, who, ("linf", "l2"))
    eps = check_budget(eps, who, positive=True)
    for arg, v in (("steps", steps), ("queries", queries), ("clever_batches", clever_batches),
                   ("clever_batch_size", clever_batch_size)):
        check_count(v, who, arg, 1)
    check_count(clever_points, who, "clever_points", 0)
    dev = next(model.parameters()).device
    x, y = x.to(dev), y.to(dev)
    seconds, notes, t_all = {}, [], time.perf_counter()

    t = time.perf_counter()
    ev = defenses.evaluate(model, x, y, eps=eps, norm=norm, attacks=("apgd-ce", "apgd-t", "fab-t"), steps=steps,
                           seed=seed, progress=False)
    seconds["white box"] = time.perf_counter() - t

    t = time.perf_counter()
    box = blackbox.BlackBox(model, output="scores", bounds=(0.0, 1.0))
    image = x.dim() == 4
    if image:
        attack, x_bb = "Square", blackbox.square(box, x, y, eps=eps, queries=queries, norm=norm, seed=seed)
    elif norm == "linf":
        attack, x_bb = "NES", blackbox.nes(box, x, y, eps=eps, queries=queries, seed=seed)
    else:
        raise ValueError(f"{who}: the black-box attack for non-image inputs (NES) is L-inf only; use norm='linf'")
    log = box.log
    seconds["black box"] = time.perf_counter() - t
    clean_ok = predict(model, x) == y
    bb_robust = (predict(model, x_bb) == y) & clean_ok
    worst = ev.robust.to(dev) & bb_robust
    if (~bb_robust & ev.robust.to(dev)).any():
        notes.append(f"the black-box attack broke {(~bb_robust & ev.robust.to(dev)).sum().item()} point(s) the "
                     "white-box ensemble did not: a sign of gradient masking")

    t = time.perf_counter()
    points = torch.nonzero(clean_ok).flatten()[:clever_points]
    cert_mask, radius, why = _crown(model, x, y, eps, norm, torch.nonzero(worst).flatten(), points)
    seconds["certificate"] = time.perf_counter() - t

    t = time.perf_counter()
    clever = (verify.clever(model, x[points], y[points], norm=norm, n_batches=clever_batches,
                            batch_size=clever_batch_size, seed=seed).score.cpu() if len(points)
              else torch.empty(0))
    seconds["CLEVER"] = time.perf_counter() - t

    trojan = None
    if trusted is not None:
        t = time.perf_counter()
        det = backdoor.dl_tnd(model, trusted, threshold=trojan_threshold if trojan_threshold is not None
                              else float("inf"))
        trojan = {"score": float(det.score), "threshold": trojan_threshold, "target": int(det.target),
                  "flagged": trojan_threshold is not None and float(det.score) > trojan_threshold}
        seconds["Trojan scan"] = time.perf_counter() - t
    if ev.note:
        notes.append(ev.note)
    seconds["total"] = time.perf_counter() - t_all
    return RobustnessReport(
        name=name or type(model).__name__, n=len(x), eps=float(eps), norm=norm, clean=clean_ok.float().mean().item(),
        white_box=ev.robust_accuracy, black_box=bb_robust.float().mean().item(),
        worst_case=worst.float().mean().item(),
        certified=None if cert_mask is None else cert_mask.float().mean().item(),
        certified_note=why, black_box_attack=attack,
        queries=queries, queries_to_success=log.summary()["mean_queries_to_success"],
        clever=clever, radius=None if radius is None else radius.cpu(), trojan=trojan, seconds=seconds, notes=notes,
        masks={"clean": clean_ok.cpu(), "white box": ev.robust.cpu(), "black box": bb_robust.cpu(),
               "worst case": worst.cpu()} | ({} if cert_mask is None else {"certified": cert_mask.cpu()}))


@dataclass
class Comparison:
    """Several :class:`RobustnessReport` side by side (:func:`compare`)."""

    reports: list[RobustnessReport]

    def rows(self) -> list[list[str]]:
        """One header row, then one row per measurement, one column per model."""
        head = ["lens", "measurement"] + [r.name for r in self.reports]
        table = {}
        for r in self.reports:
            for lens, key, _, v in r.rows():
                table.setdefault((lens, key), {})[r.name] = v
        return [head] + [[lens, key] + [vals.get(r.name, "—") for r in self.reports]
                         for (lens, key), vals in table.items()]

    def __str__(self) -> str:
        rows = self.rows()
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows)

    def figure(self):
        """Grouped bars: clean, black-box, white-box, worst-case and certified accuracy per model."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(9, 3.2), layout="constrained")
        ax = fig.subplots()
        stages = [("clean", "clean", "#888888"), ("black_box", "black box", "#4c72b0"),
                  ("white_box", "white box", "#dd8452"), ("worst_case", "worst case", "#c44e52"),
                  ("certified", "certified (CROWN)", "#55a868")]
        w = 0.8 / len(stages)
        for j, (attr, label, c) in enumerate(stages):
            vals = [getattr(r, attr) for r in self.reports]
            pos = [i + (j - (len(stages) - 1) / 2) * w for i in range(len(self.reports))]
            ax.bar([p for p, v in zip(pos, vals) if v is not None], [100 * v for v in vals if v is not None],
                   width=w, color=c, label=label)
        ax.set_xticks(range(len(self.reports)), [r.name for r in self.reports], fontsize=9)
        ax.set_ylim(0, 105), ax.set_ylabel("accuracy (%)"), ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
        balls = sorted({f"{r.norm} ε = {r.eps:g}" for r in self.reports})
        ax.set_title("robustness of each model: " + ", ".join(balls), fontsize=10)
        return fig

    def _repr_html_(self) -> str:
        rows = self.rows()
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td{' class=num' if i > 1 else ''}>{html.escape(c)}</td>"
                                        for i, c in enumerate(row)) + "</tr>" for row in rows[1:])
        return (f"<div><table class='advlib-report'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
                f"{_svg(self.figure())}</div>")

    def to_html(self, path: str | Path) -> Path:
        """Write the comparison, and each model's own report below it, as one standalone HTML page."""
        body = self._repr_html_() + "".join(f"<h2>{html.escape(r.name)}</h2>{r._repr_html_()}" for r in self.reports)
        return _page(path, "Robustness reports", body)


def compare(reports) -> Comparison:
    """Put :class:`RobustnessReport` objects side by side: one table, one figure."""
    reports = list(reports)
    if not reports or not all(isinstance(r, RobustnessReport) for r in reports):
        raise ValueError("compare: give a non-empty list of RobustnessReport (from robustness_report)")
    return Comparison(reports)
