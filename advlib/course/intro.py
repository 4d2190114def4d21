"""Checks and figures of lecture 00 (introduction)."""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .exercises import ExerciseError, attempt

__all__ = ["check_lp_norms", "check_project_linf", "SCENARIOS", "check_threats", "Part", "PARTS", "exists",
           "lectures_of", "is_written", "parts_table", "threat_taxonomy"]


def _probe_batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    dense = torch.randn(6, 1, 8, 8, generator=g)
    sparse = dense * (torch.rand(6, 1, 8, 8, generator=g) < 0.1)
    return [dense, sparse, torch.zeros(3, 1, 4, 4), torch.randn(2, 3, 5, 5, generator=g)]


def check_lp_norms(lp_norm, *, strict: bool = False) -> None:
    """``lp_norm(delta, p)`` must return the per-example Lp norm (a vector of length N) of a batch
    ``delta`` (N x ...), for p in {inf, 2, 1, 0} (L0 counts the non-zero entries)."""

    def check():
        for delta in _probe_batches():
            flat = delta.flatten(1)
            for p in (math.inf, 2, 1, 0):
                want = (flat != 0).sum(1).to(flat.dtype) if p == 0 else torch.linalg.vector_norm(flat, ord=p, dim=1)
                got = lp_norm(delta.clone(), p)
                if not isinstance(got, torch.Tensor) or got.shape != want.shape:
                    raise ExerciseError(f"for p={p} and a batch of shape {tuple(delta.shape)} expected a tensor of "
                                        f"shape {tuple(want.shape)} (one norm per example), got "
                                        f"{getattr(got, 'shape', type(got).__name__)}. Hint: flatten all but dim 0.")
                if not torch.allclose(got.to(want.dtype), want, rtol=1e-5, atol=1e-6):
                    hint = {math.inf: "the largest absolute entry", 2: "square root of the sum of squares",
                            1: "sum of absolute values", 0: "number of entries that are not exactly zero"}[p]
                    raise ExerciseError(f"wrong L{p} norm: expected {want[:3].tolist()}..., got {got[:3].tolist()}... "
                                        f"Hint: the L{p} norm is the {hint}, per example.")

    attempt(check, title="Lp norms", strict=strict)


def check_project_linf(project, *, strict: bool = False) -> None:
    """``project(x_adv, x0, eps)`` must return the closest point to ``x_adv`` that lies both in the
    L-infinity ball of radius ``eps`` around ``x0`` and in the valid image range [0, 1]."""

    def check():
        g = torch.Generator().manual_seed(2)
        x0 = torch.rand(16, 1, 8, 8, generator=g)
        x0[:4] = x0[:4].round()  # pixels exactly at 0 and 1, as in the digits
        for eps in (0.0, 0.05, 0.3, 2.0):
            x_adv = x0 + 0.8 * torch.randn(x0.shape, generator=g)
            out = project(x_adv.clone(), x0.clone(), eps)
            if not isinstance(out, torch.Tensor) or out.shape != x0.shape:
                raise ExerciseError(f"expected a tensor of shape {tuple(x0.shape)}, got "
                                    f"{getattr(out, 'shape', type(out).__name__)}")
            if (out - x0).abs().max() > eps + 1e-6:
                raise ExerciseError(f"for eps={eps} some pixel moved by {(out - x0).abs().max():.3f} > eps. "
                                    "Hint: clamp x_adv - x0 to [-eps, eps].")
            if out.min() < 0 or out.max() > 1:
                raise ExerciseError("the result leaves the valid range [0, 1]. Hint: clamp the image too.")
            want = torch.maximum(torch.minimum(x_adv, x0 + eps), x0 - eps).clamp(0, 1)
            if not torch.allclose(out, want, atol=1e-6):
                raise ExerciseError("the result is inside both sets but is not the *closest* such point to "
                                    "x_adv. Hint: the intersection of two boxes is a box; clip each pixel.")
            if not torch.allclose(project(out.clone(), x0.clone(), eps), out, atol=1e-6):
                raise ExerciseError("projecting twice should change nothing (a projection is idempotent)")

    attempt(check, title="L-infinity projection", strict=strict)


#: Scenarios of the threat-model quiz: which part of the pipeline the attacker reaches
#: ("data", "model" or "inference") and, for evasion attacks, what they know
#: ("white-box", "query" = black-box with queries, "transfer" = black-box through a surrogate).
SCENARIOS = {
    1: "A spam filter is retrained every week on mail that users report; spammers report their own "
       "spam as 'not spam'.",
    2: "Researchers with a copy of a car's traffic-sign detector print stickers that make a stop sign "
       "read as 'speed limit 45'.",
    3: "An attacker sends images to a cloud vision API that returns only the top label, and edits "
       "an image a little at a time until the label flips.",
    4: "A labelling contractor slips 50 stop-sign photos with a small yellow square, labelled "
       "'speed limit', into your training set.",
    5: "An attacker crafts adversarial images on their own model trained for the same task, then "
       "submits them to your service, which they cannot query in advance.",
    6: "An insider replaces the model file on the server with a pickled 'model' that runs code when "
       "it is loaded.",
}
_REACH = {1: "data", 2: "inference", 3: "inference", 4: "data", 5: "inference", 6: "model"}
_KNOWLEDGE = {2: "white-box", 3: "query", 5: "transfer"}
_WHY = {1: "poisoning: the attacker only touches training data",
        2: "evasion at test time with full knowledge of the model",
        3: "evasion at test time seeing only outputs: a (hard-label) query attack",
        4: "a backdoor planted through the training data",
        5: "evasion by transfer: the attacker never queries the target before the attack",
        6: "model injection: the deployed model itself is replaced (never unpickle untrusted files)"}


def check_threats(reach: dict, knowledge: dict, *, strict: bool = False) -> None:
    """``reach``: scenario -> "data" | "model" | "inference"; ``knowledge``: for the evasion
    scenarios (2, 3, 5) -> "white-box" | "query" | "transfer"."""

    def check():
        if reach is None or knowledge is None:
            raise NotImplementedError
        wrong = [f"scenario {k}: reach is {v!r} ({_WHY[k]})" for k, v in _REACH.items() if reach.get(k) != v]
        wrong += [f"scenario {k}: knowledge is {v!r} ({_WHY[k]})" for k, v in _KNOWLEDGE.items()
                  if knowledge.get(k) != v]
        if wrong:
            raise ExerciseError(f"{len(wrong)} answer(s) to revisit:\n  " + "\n  ".join(wrong))

    attempt(check, title="threat models", strict=strict)


@dataclass(frozen=True)
class Part:
    """One block of the course map: its part number, what it covers and the module that implements it."""

    number: int
    topic: str
    covers: str
    module: str
    #: the lecture numbers of this block when it shares its part with another (e.g. Part 1's
    #: training-phase attacks are lecture 04); empty: the part's other lectures
    numbers: tuple[int, ...] = ()


#: The course map of the lecture's "holistic view", in the order the course takes it. Whether a
#: part is written is not typed here: :func:`is_written` looks for its module and its lectures.
PARTS = (
    Part(1, "Evasion attacks", "white-box attacks (FGSM, PGD, C&W, EAD, L0); universal, ensemble and physical "
         "perturbations", "advlib.attacks"),
    Part(1, "Training-phase attacks", "data poisoning and backdoors", "advlib.backdoor", (4,)),
    Part(2, "Black-box attacks", "zeroth-order optimisation; ZOO, AutoZOOM, NES, Bandits, OPT, Sign-OPT, Boundary, "
         "transfer", "advlib.blackbox"),
    Part(3, "Model reprogramming", "AR, BAR (zeroth-order, through a black box), V2S for time series, "
         "representation alignment", "advlib.reprogram"),
    Part(4, "Defenses", "adversarial training, TRADES, randomness, adaptive attacks, strong evaluation, backdoor "
         "detection and repair", "advlib.defenses"),
    Part(5, "Verification", "IBP, Fast-Lin, CROWN, CNN-Cert, CLEVER, randomized smoothing", "advlib.verify"),
    Part(6, "Explanations and structured attacks", "contrastive explanations (pertinent negatives and positives), "
         "group-sparse StrAttack", "advlib.applications", (50,)),
    Part(6, "Watermarks, extraction and privacy", "watermarks in input gradients, model extraction, membership "
         "inference", "advlib.applications", (51,)),
    Part(6, "Adversarial sequences", "targeted attacks on a sequence labeller, temporal-dependency detection and "
         "its adaptive attack", "advlib.applications.temporal", (52,)),
    Part(6, "Federated backdoors", "federated averaging, robust aggregation (Krum, Multi-Krum, Bulyan, trimmed "
         "mean), centralised and distributed backdoor attacks", "advlib.applications.federated", (53,)),
)

#: Where the lectures live in a checkout of the course (absent in an installed package).
LECTURES = Path(__file__).resolve().parents[2] / "lectures"


def exists(module: str) -> bool:
    """Whether ``module`` can be imported here (looked up with :func:`importlib.util.find_spec`,
    without importing it; a missing parent package counts as missing)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def lectures_of(part: Part, folder: Path = LECTURES) -> list[str]:
    """The lectures of a part in ``folder``: part k is numbered 10 (k - 1) to 10 (k - 1) + 9 (00 is
    this introduction), e.g. ``40_certification`` is in part 5; a block with ``numbers`` takes those
    lectures of its part, and the part's other block the rest."""
    found = sorted(folder.glob(f"{part.number - 1}[0-9]_*.md")) if folder.is_dir() else []
    claimed = {n for p in PARTS if p.number == part.number and p is not part for n in p.numbers}
    return [f.stem for f in found if f.stem[:2] != "00"
            and (int(f.stem[:2]) in part.numbers if part.numbers else int(f.stem[:2]) not in claimed)]


def is_written(part: Part, folder: Path = LECTURES) -> bool:
    """A part is written once its module exists and (in a checkout, where the lectures can be seen)
    it has a lecture: a module alone, such as the robust-training recipes a later lecture needs,
    is not yet the part."""
    return exists(part.module) and (bool(lectures_of(part, folder)) or not folder.is_dir())


def parts_table(folder: Path = LECTURES) -> str:
    """The course map as a Markdown table; a part is marked "being written" unless :func:`is_written`."""
    rows = ["| Part | Topic | What it covers | advlib | Lectures |", "|---|---|---|---|---|"]
    for p in PARTS:
        done = is_written(p, folder)
        lectures = ", ".join(f"`{n}`" for n in lectures_of(p, folder)) if done else "*being written*"
        rows.append(f"| {p.number} | {p.topic}{'' if done else ' *(being written)*'} | {p.covers} | "
                    f"`{p.module}` | {lectures} |")
    return "\n".join(rows)


def _parts_label(topics: list[str]) -> str:
    """'Parts 1, 5' for the parts of ``topics`` that are written, then those being written on a second line."""
    done, todo = [], []
    for p in (p for p in PARTS if p.topic in topics):
        (done if is_written(p) else todo).append(str(p.number))
    done, todo = sorted(set(done)), sorted(set(todo) - set(done))

    def name(ns):
        return ("Part " if len(ns) == 1 else "Parts ") + ", ".join(ns)

    lines = [name(done)] if done else []
    if todo:
        lines.append(("+ " if done else "") + name(todo) + " (being written)")
    return "\n".join(lines) or "—"


def threat_taxonomy():
    """The lecture's 'holistic view' as a figure: attack types against the attacker's reach (data,
    model / training, inference), and the taxonomy of evasion attacks by knowledge."""
    import matplotlib.pyplot as plt

    attacks = ["Poisoning", "Backdoor", "Evasion\n(adversarial example)", "Extraction\n(stealing, membership)",
               "Model injection"]
    reach = ["Data", "Model /\ntraining", "Inference"]
    cells = {(0, 0): "X", (0, 1): "X*", (1, 0): "X", (2, 1): "X*", (2, 2): "X", (3, 2): "X", (4, 1): "X*",
             (4, 2): "X"}
    topics = {0: ["Training-phase attacks"], 1: ["Training-phase attacks", "Defenses", "Federated backdoors"],
              2: ["Evasion attacks", "Black-box attacks", "Defenses", "Verification",
                  "Explanations and structured attacks"], 3: ["Watermarks, extraction and privacy"]}
    parts = {i: _parts_label(t) for i, t in topics.items()} | {4: "this lecture\n(safe loading)"}
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(8, 7.6), gridspec_kw={"height_ratios": [1.15, 1]})
    colours = ["#4c72b0", "#dd8452", "#55a868"]
    for i, _ in enumerate(attacks):
        for j, _ in enumerate(reach):
            mark = cells.get((i, j))
            ax.add_patch(plt.Rectangle((j, -i - 1), 1, 1, fc=colours[j] if mark else "#f2f2f2",
                                       alpha=0.85 if mark else 1, ec="white", lw=2))
            if mark:
                ax.text(j + 0.5, -i - 0.5, mark, ha="center", va="center", color="white", fontsize=14,
                        weight="bold")
        ax.text(3.1, -i - 0.5, parts[i], va="center", fontsize=9, color="#555")
    ax.text(3.1, 0.25, "in the course", fontsize=9, color="#555", weight="bold")
    ax.set_xlim(0, 4.6)
    ax.set_ylim(-len(attacks), 0)
    ax.set_xticks([0.5, 1.5, 2.5], reach)
    ax.xaxis.tick_top()
    ax.set_yticks([-i - 0.5 for i in range(len(attacks))], attacks)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    ax.set_title("Attacks by the attacker's reach (X* = model internals unknown in black-box settings)",
                 fontsize=10, pad=30)

    tree = [("Evasion attacks", 0, 3.0), ("White-box", 1, 4.6), ("Black-box", 1, 2.4), ("Grey-box", 1, 0.6),
            ("standard", 2, 5.2), ("adaptive\n(defense-aware)", 2, 4.0), ("query: soft label", 2, 3.1),
            ("query: hard label", 2, 2.2), ("transfer", 2, 1.3), ("everything\nin between", 2, 0.3)]
    pos = {name: (x, y) for name, x, y in tree}
    edges = [("Evasion attacks", c) for c in ("White-box", "Black-box", "Grey-box")] + \
            [("White-box", "standard"), ("White-box", "adaptive\n(defense-aware)"),
             ("Black-box", "query: soft label"), ("Black-box", "query: hard label"), ("Black-box", "transfer"),
             ("Grey-box", "everything\nin between")]
    for a, b in edges:
        (x0, y0), (x1, y1) = pos[a], pos[b]
        bx.plot([x0, x1], [y0, y1], color="#999", lw=1, zorder=1)  # centre to centre, under the boxes
    for name, x, y in tree:
        colour = ["#333", "#4c72b0", "#8c8c8c"][x]
        bx.text(x, y, name, ha="center", va="center", fontsize=9, color="white", zorder=2,
                bbox=dict(boxstyle="round,pad=0.35", fc=colour, ec="none"))
    bx.set_xlim(-0.5, 2.6)
    bx.set_ylim(-0.3, 5.7)
    bx.axis("off")
    bx.set_title("Evasion attacks by what the attacker knows", fontsize=10)
    fig.tight_layout()
    return fig
