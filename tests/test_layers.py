"""The package's layers, bottom to top: an import may only point down (or within its layer).
The loop never imports a door, the models never import the weights registry, and so on."""

import re
from pathlib import Path

import vqclip

LAYERS = [
    {
        "errors",
        "validation",
        "declare",
        "atomic",
        "safeload",
        "statedict",
        "attention",
        "devices",
        "omp",
    },
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


def test_the_loop_knows_no_plug_in():
    """generate/ offers extension points; the prior's code sits behind them in prior/, which
    has no import cycle."""
    root = Path(vqclip.__file__).parent
    loop = [root / "generate" / "run.py", root / "generate" / "extension.py"]
    assert not [
        p.name for p in loop if re.search(r"^\s*(from|import) vqclip\.prior\b", p.read_text(), re.M)
    ]
    inner = re.compile(r"^\s*from vqclip\.prior\.(\w+) import", re.M)
    graph = {
        p.stem: set(
            inner.findall(re.sub(r"if typing.TYPE_CHECKING:\n(    .*\n)+", "", p.read_text()))
        )
        for p in (root / "prior").glob("*.py")
    }

    def reaches(start, goal, seen=()):
        return any(
            n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph[start]
        )

    assert not [m for m in graph if reaches(m, m)], graph
