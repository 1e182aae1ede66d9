"""Story mode: a prompt whose parts, separated by "^", take turns over a run's steps (or over an
animation's frames), as in nerdyrodent's generate.py ("a forest ^ a castle ^ the sea").

Which part is shown is a pure function of the step index, so a resumed run shows the same part
at every step as one that never stopped. Three ways to schedule `n` parts over `total` steps:

- `every` N: the next part every N steps, back to the first after the last (nerdyrodent's
  `-cpe`, wrap-around included);
- `starts` (s_0=0 < s_1 < ...): part k from step s_k on, until the next start;
- neither: an equal share each, in order.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

from vqclip.errors import ConfigError

SEPARATOR = "^"


def story_parts(text: str) -> list[str]:
    """The parts of a story prompt, stripped; a prompt without "^" is a story of one part."""
    pieces = [piece.strip() for piece in text.split(SEPARATOR)]
    for i, piece in enumerate(pieces, 1):
        if not piece:
            raise ConfigError(
                f"part {i} of {len(pieces)} of the story {text!r} is empty; write a prompt "
                f"between the '{SEPARATOR}'s"
            )
    return pieces


def active_part(
    index: int, parts: int, total: int, every: int = 0, starts: Sequence[int] = ()
) -> int:
    """The part (0-based) of a story of `parts` parts shown at step (or frame) `index`
    (0-based) of `total`."""
    if parts == 1:
        return 0
    if starts:
        return bisect.bisect_right(starts, index) - 1
    if every:
        return (index // every) % parts
    return min(index * parts // total, parts - 1)


def check_schedule(every: int, starts: Sequence[int], part_counts: Sequence[int]) -> None:
    """The schedule fits the stories (one part count per prompt string), whatever the length of
    the run; ConfigError naming the option otherwise."""
    story = any(n > 1 for n in part_counts)
    if every and starts:
        raise ConfigError(
            "change_prompt_every and prompt_starts: give one of the two ways to schedule a story"
        )
    if (every or starts) and not story:
        name = "change_prompt_every" if every else "prompt_starts"
        raise ConfigError(
            f"{name}: no prompt is a story; separate its parts with '{SEPARATOR}', "
            'e.g. "a forest ^ a castle"'
        )
    if not starts:
        return
    starts = list(starts)
    if starts[0] != 0 or any(b <= a for a, b in itertools.pairwise(starts)):
        raise ConfigError(
            f"prompt_starts={starts}: the first part starts at 0 and each later one after the "
            "one before, e.g. [0, 100, 250]"
        )
    for n in part_counts:
        if n != len(starts):
            raise ConfigError(
                f"prompt_starts={starts}: gives {len(starts)} starts, but a story has {n} parts; "
                "give one start per part"
            )


def check_length(
    total: int, every: int, starts: Sequence[int], part_counts: Sequence[int], unit: str
) -> None:
    """Every part of every story is shown at least once in a run of `total` steps (or frames)."""
    most = max(part_counts, default=1)
    if most == 1:
        return
    if starts and starts[-1] >= total:
        raise ConfigError(
            f"prompt_starts={list(starts)}: the last part starts at {unit} {starts[-1]}, but "
            f"there are only {total} {unit}s (numbered from 0)"
        )
    if every and every * (most - 1) >= total:
        raise ConfigError(
            f"change_prompt_every={every}: a story of {most} parts needs more than "
            f"{every * (most - 1)} {unit}s to reach its last part; there are {total}"
        )
    if not (every or starts) and total < most:
        raise ConfigError(
            f"a story of {most} parts needs at least {most} {unit}s, one per part; "
            f"there are {total}"
        )
