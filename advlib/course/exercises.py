"""The machinery behind every exercise check."""
from __future__ import annotations

import functools
from collections.abc import Callable


class ExerciseError(AssertionError):
    """An answer is wrong; the message says how and gives a hint."""


class NotAttempted(ExerciseError):
    """A strict check found the stub: the exercise is not attempted yet."""


def attempt(check: Callable[[], None], *, title: str, strict: bool) -> None:
    """Run ``check``; print the verdict. A stub (``NotImplementedError``) is "not attempted yet"
    unless ``strict``; a wrong answer raises :class:`ExerciseError` with the check's hint."""
    try:
        check()
    except NotImplementedError:
        if strict:
            raise NotAttempted(f"{title}: the answer is still a stub (it raises NotImplementedError)") from None
        print(f"… {title}: not attempted yet. Fill in the cell above and run this check again "
              "(or open the solution below).")
        return
    print(f"✓ {title}: correct.")


def or_reference(answer: Callable, reference: Callable, *, title: str) -> Callable:
    """``answer`` where the learner has written it, else ``reference``: what later cells call, so a
    notebook whose exercise is still a stub (it raises ``NotImplementedError``) runs to the end.

    The first call that finds the stub prints once that the reference stands in for it.
    """
    told = False

    @functools.wraps(reference)
    def call(*args, **kwargs):
        nonlocal told
        try:
            return answer(*args, **kwargs)
        except NotImplementedError:
            if not told:
                print(f"… {title} is not attempted yet: the cells below use the library's reference instead.")
                told = True
            return reference(*args, **kwargs)

    return call
