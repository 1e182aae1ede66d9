"""A batch's plan: the specs file read into items, and the items not yet finished cut into units.

Each non-blank line of SPECS.jsonl (lines starting with # are comments) is a JSON object whose
keys are generate option names, as `vqclip generate` and the web service take them (`prompt`,
`model`, `iterations`, `seed`, `size`, ...), plus `animation` (an object of `Animation`
settings) for a zoom/pan/rotate video. An item is known by its spec, not its line: its key is
a hash of the spec's JSON (with `-2`, `-3` ... for repeats of the same spec), its folder
`items/<key>/`. So comments and new lines anywhere leave finished items alone, and a failed line
fixed in place is a new item that runs.

A unit is what one worker carries out at once: one item, an animation, or a group of
compatible items optimised together as one batch of latents (one prompt per image). Items are
compatible when every setting but the prompt is the same and none fixes its own seed (a run has
one seed). Items that give no seed get one derived from the batch's seed and their key, so a
rerun makes the same pictures; the batch seed and thread count are drawn once and kept in
`batch.json`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vqclip.batch.storage import Storage
from vqclip.errors import ConfigError, VQClipError
from vqclip.generate.config import GenerateConfig, build_config
from vqclip.jobs.animation import Animation, check_animation

BATCH_FILE = "batch.json"
RESULT_FILE = "result.json"
GROUP_FILE = "group.json"
ITEMS_DIR = "items"
GROUPS_DIR = "groups"


@dataclass(frozen=True)
class Item:
    line: int  # 1-based line number in the specs file (where it is now; not its identity)
    key: str  # its identity: a hash of the spec (item_keys)
    spec: Any  # the line's JSON value (its text when it is not JSON)
    config: GenerateConfig | None = None
    animation: Animation | None = None
    error: str | None = None  # why the line cannot be run

    @property
    def folder(self) -> str:
        return item_folder(self.key)

    @property
    def group_key(self) -> str | None:
        """Items with the same key can share one run; None: this item runs alone."""
        if self.config is None or self.animation is not None or "seed" in self.spec:
            return None
        if self.config.batch_size != 1 or len(self.config.prompts) != 1:
            return None
        rest = {k: v for k, v in self.config.to_dict().items() if k not in ("prompts", "seed")}
        return json.dumps(rest, sort_keys=True)

    @property
    def steps(self) -> int:
        if self.animation is not None:
            return self.animation.total_steps(self.config)
        return self.config.iterations


def item_folder(key: str) -> str:
    return f"{ITEMS_DIR}/{key}"


def item_keys(lines: list[tuple[int, str]]) -> list[str]:
    """Each line's identity: a hash of its spec (its JSON re-serialised, so spacing and key
    order do not count), `-2`, `-3` ... for the second and later copies of the same spec."""
    keys, seen = [], {}
    for _, text in lines:
        value = _spec_value(text)
        canonical = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:12]
        seen[digest] = seen.get(digest, 0) + 1
        keys.append(digest if seen[digest] == 1 else f"{digest}-{seen[digest]}")
    return keys


@dataclass(frozen=True)
class Unit:
    """One run for a worker. `configs` holds each item's own settings; `config` the run's (for
    a group: one prompt per item, the group's seed)."""

    kind: str  # "image", "group" or "animation"
    folder: str
    lines: tuple[int, ...]
    keys: tuple[str, ...]
    specs: tuple[Any, ...]
    configs: tuple[dict, ...]
    config: dict
    animation: dict | None
    steps: int

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Unit:
        data = json.loads(text)
        for key in ("lines", "keys", "specs", "configs"):
            data[key] = tuple(data[key])
        return cls(**data)


MAX_LINE_BYTES = 64 * 1024  # a spec is a few hundred bytes; prompts are cut at 77 tokens


def read_specs(path: str | Path) -> list[tuple[int, str]]:
    """(line number, text) of every line that is neither blank nor a # comment; ConfigError for
    a line longer than MAX_LINE_BYTES (read in pieces, so a huge line is not held whole)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"specs file {str(path)!r} does not exist")
    lines = []
    try:
        with open(path, "rb") as file:
            for number, raw in enumerate(iter(lambda: file.readline(MAX_LINE_BYTES + 1), b""), 1):
                if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                    raise ConfigError(
                        f"specs file {str(path)!r}, line {number}: longer than "
                        f"{MAX_LINE_BYTES // 1024} KiB; a spec is one JSON object of options "
                        "(images go by path or URL, not inline)"
                    )
                line = raw.decode("utf-8").strip()
                if line and not line.startswith("#"):
                    lines.append((number, line))
    except UnicodeDecodeError as e:
        raise ConfigError(f"specs file {str(path)!r} is not UTF-8 text ({e})")
    if not lines:
        raise ConfigError(
            f"specs file {str(path)!r} has no specs; write one JSON object per line, e.g. "
            '{"prompt": "a red circle on a blue background", "model": "toy"}'
        )
    return lines


def derive_seed(batch_seed: int, key: str) -> int:
    digest = hashlib.sha256(f"{batch_seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**31


def parse_item(
    line: int, text: str, batch_seed: int, threads: int = 1, key: str | None = None
) -> Item:
    """The item of one specs line; an Item with `error` set (naming the line) when it is bad.
    `threads`: the batch's thread count, for items that name none; `key`: its identity (by
    default the hash of this spec alone)."""
    key = key or item_keys([(line, text)])[0]
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        return Item(line, key, text, error=f"line {line}: not a JSON object ({e})")
    try:
        if not isinstance(spec, dict):
            raise ConfigError(f"expected a JSON object of option names, got {spec!r}")
        given = {k: v for k, v in spec.items() if k != "animation"}
        if "seed" not in given:
            given["seed"] = derive_seed(batch_seed, key)
        given.setdefault("threads", threads)
        config = build_config(given)
        animation = None
        if "animation" in spec:
            animation = Animation.from_dict(spec["animation"])
            check_animation(config, animation)
    except VQClipError as e:
        return Item(line, key, spec, error=f"line {line}: {e}")
    return Item(line, key, spec, config, animation)


def open_batch(storage: Storage, threads: int = 1) -> tuple[int, int]:
    """The batch's seed and thread count, drawn and recorded on the first run, so a rerun (or
    Ray) makes the same pictures."""
    stored = read_json(storage, BATCH_FILE)
    record = dict(stored) if stored else {"format": "vqclip-batch", "version": 2}
    record.setdefault("seed", secrets.randbelow(2**31))
    record.setdefault("threads", threads)
    if stored != record:
        storage.write_text(BATCH_FILE, json.dumps(record, indent=1))
    return record["seed"], record["threads"]


def read_json(storage: Storage, rel: str) -> dict | None:
    """A JSON object the batch wrote, None when absent; ConfigError when it is not one (these
    files are written atomically, so only something else can have changed them)."""
    text = storage.read_text(rel)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        data = e
    if not isinstance(data, dict):
        raise ConfigError(f"{storage.path(rel)} is not a JSON object ({data}); was it edited?")
    return data


def _spec_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def read_results(storage: Storage, items: list[Item]) -> dict[str, dict]:
    """Key -> the result record of every item that has finished (done, partial or failed)."""
    results = {}
    for item in items:
        if item.error is None:
            record = read_json(storage, f"{item.folder}/{RESULT_FILE}")
            if record is not None:
                results[item.key] = record
    return results


def _single(item: Item) -> Unit:
    kind = "animation" if item.animation is not None else "image"
    config = item.config.to_dict()
    animation = item.animation.to_dict() if item.animation is not None else None
    return Unit(
        kind,
        item.folder,
        (item.line,),
        (item.key,),
        (item.spec,),
        (config,),
        config,
        animation,
        item.steps,
    )


def _group(items: list[Item], batch_seed: int) -> Unit:
    if len(items) == 1:
        return _single(items[0])
    lines = tuple(item.line for item in items)
    keys = tuple(item.key for item in items)
    folder = f"{GROUPS_DIR}/{hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:12]}"
    prompts = tuple(item.config.prompts[0] for item in items)
    seed = derive_seed(batch_seed, "group:" + ",".join(keys))
    config = items[0].config.replace(prompts=prompts, batch_size=len(items), seed=seed)
    configs = tuple(item.config.to_dict() for item in items)
    specs = tuple(item.spec for item in items)
    return Unit(
        "group", folder, lines, keys, specs, configs, config.to_dict(), None, config.iterations
    )


def plan_units(
    storage: Storage, items: list[Item], pending: set[str], group: int, batch_seed: int
) -> list[Unit]:
    """The pending items as units, in line order. A group started by an earlier run is kept
    while all its items are still pending (so it resumes from its checkpoint); the other
    compatible items are grouped `group` at a time."""
    by_key = {item.key: item for item in items if item.key in pending}
    units: list[Unit] = []
    taken: set[str] = set()
    for name in storage.folders(GROUPS_DIR):
        group_file = read_json(storage, f"{GROUPS_DIR}/{name}/{GROUP_FILE}")
        keys = group_file.get("keys", []) if group_file else []
        members = [by_key.get(key) for key in keys]
        if len(members) < 2 or len(members) > group or None in members:
            continue
        if len({m.group_key for m in members}) != 1 or members[0].group_key is None:
            continue
        unit = _group(members, batch_seed)
        if unit.folder == f"{GROUPS_DIR}/{name}" and not taken & set(keys):
            units.append(unit)
            taken.update(keys)
    open_groups: dict[str, list[Item]] = {}
    for item in sorted(by_key.values(), key=lambda item: item.line):
        if item.key in taken:
            continue
        key = item.group_key if group > 1 else None
        if key is None:
            units.append(_single(item))
            continue
        members = open_groups.setdefault(key, [])
        members.append(item)
        if len(members) == group:
            units.append(_group(open_groups.pop(key), batch_seed))
    units += [_group(members, batch_seed) for members in open_groups.values()]
    return sorted(units, key=lambda unit: unit.lines[0])
