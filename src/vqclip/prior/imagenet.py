"""The 1000 ImageNet class names and the 80 prompt templates of CLIP's zero-shot classifier.

Both lists are OpenAI CLIP's, from its notebook `notebooks/Prompt_Engineering_for_ImageNet.ipynb`
(cleaned class names such as "tench", "goldfish", "great white shark"; templates such as
"a bad photo of a {}."), as carried by open_clip in `src/open_clip/zero_shot_metadata.py`
(IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES). They are shipped as data files next to this
module: `imagenet_classes.txt` (line i = class i) and `imagenet_templates.txt` (`{}` marks where
the class name goes).

They are for choosing a class-conditional prior's class from a prompt by CLIP zero-shot: embed
every class name in every template, average per class, and take the class nearest the prompt;
or let the user name the class (`prior_class`), which `class_index` resolves.

The source lists two names twice, as OpenAI's notebook does: "missile" (657 and 744) and
"sunglasses" (836 and 837); `class_index` asks for the number when a name is ambiguous.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources

from vqclip.errors import ConfigError

_FIELD = "prior_class"
_NUMBER = re.compile(r"[+-]?[0-9]+")


def _read_lines(name: str) -> tuple[str, ...]:
    text = (resources.files("vqclip.prior") / name).read_text(encoding="utf-8")
    return tuple(text.splitlines())


@cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names, in class-index order."""
    return _read_lines("imagenet_classes.txt")


@cache
def imagenet_templates() -> tuple[str, ...]:
    """CLIP's 80 ImageNet prompt templates; each holds `{}` once, for the class name."""
    return _read_lines("imagenet_templates.txt")


def class_index(value: int | str, names: Sequence[str]) -> int:
    """The index into `names` of a class given as a number (int or digit string) or a name.

    Names match ignoring case and surrounding spaces. Raises ConfigError (field "prior_class")
    for a number out of range, an unknown name, or a name that more than one class has.
    """
    hint = f"give a number 0-{len(names) - 1} or a class name"
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"prior_class {value!r} is not a class: {hint}", field=_FIELD)
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, int):
        if not 0 <= value < len(names):
            raise ConfigError(
                f"prior_class {value} is out of range 0-{len(names) - 1}: {hint}", field=_FIELD
            )
        return value
    wanted = value.strip().lower()
    lowered = [name.strip().lower() for name in names]
    found = [i for i, name in enumerate(lowered) if name == wanted]
    if len(found) == 1:
        return found[0]
    if found:
        listed = ", ".join(str(i) for i in found)
        raise ConfigError(
            f"prior_class {value!r} names more than one class ({listed}): give the number",
            field=_FIELD,
        )
    close = difflib.get_close_matches(wanted, lowered, n=3)
    suggestion = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise ConfigError(
        f"prior_class {value!r} is not a class name{suggestion}: {hint}", field=_FIELD
    )


# The seven of the 80 templates OpenAI's notebook found to do as well as all 80 together: the
# ensemble vqclip embeds the class names in (1000 x 7 texts, once per CLIP, kept on disk), since
# all 80 cost a CPU user many minutes.
ENSEMBLE = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)
