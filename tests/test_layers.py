"""The package's layers, bottom to top: an import may only point down (or within its layer).
The loop never imports a door, the models never import the weights registry, and so on."""

import re
from pathlib import Path

import vqclip

LAYERS = [
    {"errors", "validation", "atomic", "safeload", "statedict", "attention", "devices"},
    {"vqgan", "clip"},  # models: strict loaders, no loop code
    {"weights"},  # registry, downloads, cache
    {"generate", "prior"},  # the loop and its parts
    {"jobs", "output", "toy"},  # what every door shares (files: images carry their settings)
    {"batch", "serve", "bench", "pipeline"},  # doors as libraries
    {"cli"},  # the command line
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
IMPORT = re.compile(r"^\s*(?:from|import) vqclip\.(\w+)", re.M)


def test_every_import_points_down():
    root = Path(vqclip.__file__).parent
    wrong = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        if parts == ("__init__",):
            continue
        here = parts[0]
        assert here in RANK, f"{here}: put the new module in a layer of this test"
        for target in IMPORT.findall(path.read_text()):
            if RANK.get(target, -1) > RANK[here]:
                wrong.append(f"{path.relative_to(root)} imports vqclip.{target}")
    assert not wrong, "upward imports:\n" + "\n".join(wrong)
