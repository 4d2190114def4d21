"""Black-box attacks (Part 2): the model is an API that answers queries, and queries are the cost.

::

    bb = advlib.blackbox.BlackBox(model, output="label")        # or output="scores"
    x_adv = advlib.blackbox.sign_opt(bb, x, y, queries=4000)
    bb.log.queries, bb.log.first_success, bb.log.distortion_at(2000)

:class:`BlackBox` answers with probabilities (soft label) or the top-1 label (hard label), counts
every query, enforces budgets and gives no gradients; every attack takes one and keeps the white-box
calling convention of :mod:`advlib.attacks`; its cost is in ``bb.log`` (a :class:`QueryLog`, the one
form shared by all of them). Gradient estimates come from :mod:`advlib.zo`.
"""
from typing import NamedTuple

from ._box import OUTPUTS, BlackBox, QueryBudgetExceeded, QueryLog
from ._common import adversarial, charged, check_attack, cw_loss, first_look, generator
from .autozoom import autozoom
from .bandits import bandits
from .boundary import boundary
from .hsja import hop_skip_jump
from .nes import nes
from .opt import opt
from .sign_opt import sign_opt
from .signsgd import zo_signsgd
from .square import square
from .transfer import transfer
from .zoo_attack import zoo_attack


class Attack(NamedTuple):
    """An entry of :data:`ATTACKS`: the function, the answers it needs and its threat model."""

    fn: object
    #: "scores" (soft label) or "label" (hard label; it also runs on a scores box)
    output: str
    #: "l2": minimal distortion, the result is the closest adversarial point found; "linf": success in an eps ball
    norm: str


#: every query attack of the part by name (:func:`transfer` is not one: it spends one query per example)
ATTACKS: dict[str, Attack] = {
    "zoo": Attack(zoo_attack, "scores", "l2"),
    "autozoom": Attack(autozoom, "scores", "l2"),
    "nes": Attack(nes, "scores", "linf"),
    "bandits": Attack(bandits, "scores", "linf"),
    "zo_signsgd": Attack(zo_signsgd, "scores", "linf"),
    "square": Attack(square, "scores", "linf"),
    "boundary": Attack(boundary, "label", "l2"),
    "opt": Attack(opt, "label", "l2"),
    "sign_opt": Attack(sign_opt, "label", "l2"),
    "hop_skip_jump": Attack(hop_skip_jump, "label", "l2"),
}

__all__ = ["OUTPUTS", "BlackBox", "QueryBudgetExceeded", "QueryLog", "ATTACKS", "Attack", "adversarial", "check_attack",
           "cw_loss", "first_look", "charged", "generator", "transfer", "zoo_attack", "autozoom", "nes", "bandits",
           "zo_signsgd", "square", "boundary", "opt", "sign_opt", "hop_skip_jump"]
