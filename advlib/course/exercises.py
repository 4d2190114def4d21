"""The machinery behind every exercise check."""
from __future__ import annotations

from collections.abc import Callable


class ExerciseError(AssertionError):
    """An answer is wrong; the message says how and gives a hint."""


def attempt(check: Callable[[], None], *, title: str, strict: bool) -> None:
    """Run ``check``; print the verdict. A stub (``NotImplementedError``) is "not attempted yet"
    unless ``strict``; a wrong answer raises :class:`ExerciseError` with the check's hint."""
    try:
        check()
    except NotImplementedError:
        if strict:
            raise ExerciseError(f"{title}: the answer is still a stub (it raises NotImplementedError)") from None
        print(f"… {title}: not attempted yet. Fill in the cell above and run this check again "
              "(or open the solution below).")
        return
    print(f"✓ {title}: correct.")
