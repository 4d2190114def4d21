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
from ._box import OUTPUTS, BlackBox, QueryBudgetExceeded, QueryLog
from ._common import adversarial, charged, check_attack, cw_loss, first_look, generator
from .autozoom import autozoom
from .bandits import bandits
from .nes import nes
from .signsgd import zo_signsgd
from .square import square
from .transfer import transfer
from .zoo_attack import zoo_attack

__all__ = ["OUTPUTS", "BlackBox", "QueryBudgetExceeded", "QueryLog", "adversarial", "check_attack", "cw_loss",
           "first_look", "charged", "generator", "transfer"]
__all__ += ["zoo_attack", "autozoom"]
__all__ += ["nes", "bandits", "zo_signsgd", "square"]
