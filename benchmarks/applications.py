"""Part 6a in one run: what batching buys StrAttack, CEM and black-box watermark extraction, and our
model extraction against ART's Copycat CNN.

    python benchmarks/applications.py [--repeats 3] [--quick]

* **StrAttack / CEM (PN)**: ``advlib.attacks.strattack`` and ``advlib.applications.pertinent_negative``
  on ``N`` test digits in one batch, against the same call made once per example (the loop a
  per-image reference implementation runs): median seconds of interleaved rounds and the ratio.
  Each example's optimisation is independent of the others (CEM without C&W's early abort, which
  looks at the batch's total), so the results must agree (printed).
* **Watermark extraction**: ``advlib.applications.extract_blackbox`` (every key's ``2N`` finite
  differences in one call of the black box) against a loop with one box call per key and
  coordinate pair: seconds, ratio, and the queries of each (equal).
* **Copycat**: ``advlib.applications.copycat`` against ART's ``CopycatCNN`` (the reference library
  installed here), both stealing ``digits-cnn`` into the same MLP with the same budget, epochs and
  batch size from a scores box: seconds and agreement with the victim on the test digits. ART's
  ``use_probability=True`` takes the victim classifier's outputs as the probabilities, and a
  ``PyTorchClassifier`` outputs logits: the victim is wrapped with a softmax (without it, measured
  here, ART's copy ends at chance agreement, 0.11).

Timings are measured here and now, never asserted; tests run ``--quick``.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch

import advlib
from advlib.applications import agreement, copycat, embed, extract_blackbox, make_watermark, pertinent_negative
from advlib.attacks import strattack
from advlib.blackbox import BlackBox

warnings.filterwarnings("ignore")


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each function over ``repeats`` rounds, after one warm-up round."""
    times = {k: [] for k in fns}
    for rnd in range(repeats + 1):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if rnd:
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def looped(attack, model, x, *args, **kw):
    return torch.cat([attack(model, x[i:i + 1], *(a[i:i + 1] for a in args), **kw) for i in range(len(x))])


def extract_loop(box, wm, h=1e-3):
    """The plain loop: one call of the box per key and coordinate pair."""
    g = torch.zeros(len(wm.keys), len(wm.coords))
    for k in range(len(wm.keys)):
        for j, i in enumerate(wm.coords):
            e = torch.zeros_like(wm.keys[k]).flatten()
            e[i] = h
            pts = torch.stack([wm.keys[k] + e.view_as(wm.keys[k]), wm.keys[k] - e.view_as(wm.keys[k])])
            lp = box.scores(pts)[:, wm.classes[k]].clamp_min(1e-30).log()
            g[k, j] = (lp[0] - lp[1]) / (2 * h)
    return torch.sign(g.mean(0))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, small sizes")
    a = ap.parse_args()
    torch.set_num_threads(2)
    if a.quick:
        a.repeats = 1
    victim = advlib.zoo.load("digits-cnn", device="cpu", progress=False)
    train, test = advlib.data.load("digits", "train"), advlib.data.load("digits", "test")
    xt, yt = test[:]
    n, steps = (4, 10) if a.quick else (20, 50)
    x, y = xt[:n], yt[:n]
    print(f"digits-cnn, {n} test digits, {steps} steps per round, {torch.get_num_threads()} threads, device cpu, "
          f"{a.repeats} interleaved rounds")

    out = {}
    kw = dict(steps=steps, search_steps=2)
    t = interleaved({"batched": lambda: out.__setitem__("b", strattack(victim, x, y, **kw)),
                     "loop": lambda: out.__setitem__("l", looped(strattack, victim, x, y, **kw))}, a.repeats)
    diff = float((out["b"] - out["l"]).abs().max())
    print(f"StrAttack        batched {t['batched']:6.2f} s  loop {t['loop']:6.2f} s  "
          f"({t['loop'] / t['batched']:.1f}x)  "
          f"max |difference| {diff:.1e}")
    kw = dict(steps=steps, search_steps=2, abort_early=False)  # C&W's abort looks at the batch's total
    t = interleaved({"batched": lambda: out.__setitem__("b", pertinent_negative(victim, x, **kw)),
                     "loop": lambda: out.__setitem__("l", looped(pertinent_negative, victim, x, **kw))}, a.repeats)
    diff = float((out["b"] - out["l"]).abs().max())
    print(f"CEM PN           batched {t['batched']:6.2f} s  loop {t['loop']:6.2f} s  "
          f"({t['loop'] / t['batched']:.1f}x)  "
          f"max |difference| {diff:.1e}")

    wm = make_watermark((1, 8, 8), n_bits=8 if a.quick else 32, n_keys=4 if a.quick else 16)
    marked = copy.deepcopy(victim)
    embed(marked, train, wm, epochs=1 if a.quick else 5, progress=False)
    boxes = {"batched": BlackBox(marked, "scores"), "loop": BlackBox(marked, "scores")}
    bits = {}
    t = interleaved({"batched": lambda: bits.__setitem__("b", extract_blackbox(boxes["batched"], wm)[0]),
                     "loop": lambda: bits.__setitem__("l", extract_loop(boxes["loop"], wm))}, a.repeats)
    same = bool(torch.equal(bits["b"], bits["l"]))
    per = {k: b.queries // (a.repeats + 1) for k, b in boxes.items()}
    print(f"Watermark read   batched {1e3 * t['batched']:6.1f} ms loop {1e3 * t['loop']:6.1f} ms "
          f"({t['loop'] / t['batched']:.1f}x)  queries {per['batched']} (batched) = {per['loop']} (loop)  "
          f"same bits {same}")

    budget, epochs = (100, 2) if a.quick else (500, 30)
    pool = train[:][0]
    mk = lambda: advlib.models.build("mlp", in_shape=(1, 8, 8))  # noqa: E731
    students = {}

    def ours():
        torch.manual_seed(0)
        students["advlib"] = s = mk()
        copycat(BlackBox(victim, "scores"), pool, s, budget=budget, epochs=epochs, min_steps=0, lr=2e-3, batch_size=64,
                weight_decay=0.0)

    try:
        from art.attacks.extraction import CopycatCNN
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        t = interleaved({"advlib": ours}, a.repeats)
        print(f"Copycat {budget} queries  advlib {t['advlib']:.2f} s agreement "
              f"{agreement(students['advlib'], victim, xt):.3f} (ART not installed)")
        return

    def theirs():
        torch.manual_seed(0)
        students["ART"] = s = mk()
        wrap = lambda m, opt: PyTorchClassifier(m, loss=torch.nn.CrossEntropyLoss(), optimizer=opt,  # noqa: E731
                                                 input_shape=(1, 8, 8), nb_classes=10, clip_values=(0.0, 1.0))
        v = wrap(torch.nn.Sequential(victim, torch.nn.Softmax(1)), None)  # ART reads probabilities off the outputs
        thief = wrap(s, torch.optim.Adam(s.parameters(), lr=2e-3))
        CopycatCNN(v, batch_size_fit=64, batch_size_query=256, nb_epochs=epochs, nb_stolen=budget,
                   use_probability=True).extract(pool.numpy(), thieved_classifier=thief)
        s.eval()

    t = interleaved({"advlib": ours, "ART": theirs}, a.repeats)
    ag = {k: agreement(s, victim, xt) for k, s in students.items()}
    print(f"Copycat {budget} queries {epochs} epochs  advlib {t['advlib']:.2f} s (agreement {ag['advlib']:.3f})  "
          f"ART {t['ART']:.2f} s (agreement {ag['ART']:.3f})  ({t['ART'] / t['advlib']:.1f}x)")


if __name__ == "__main__":
    main()
