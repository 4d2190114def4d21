"""Defenses (Part 4): robust training and its recipes.

Every robust-training method is a :class:`advlib.train.Recipe` registered by name, so that
:func:`advlib.train.fit` can use it and a zoo entry can name it::

    r = advlib.train.recipe("pgd", eps=0.1)
    advlib.train.fit(model, train, test, epochs=40, perturb=r.perturb, loss=r.loss)

Registered here: ``"pgd"`` (Madry et al., 2018) and ``"ibp"`` (Gowal et al., 2018). The defenses
part adds TRADES, SPROUT, CAT and randomised defenses to the same registry.
"""
from .recipes import ibp_training, pgd_training

__all__ = ["pgd_training", "ibp_training"]
