"""Small value checks shared by the configs."""

from typing import Any


def is_int(value: Any) -> bool:
    """An int that is not a bool (JSON's true must not pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)
