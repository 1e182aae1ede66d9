"""`vqclip batch`: many images and animations from a JSON-lines file of specs, resumably, on
local GPUs (or the CPU) or on a Ray cluster. No algorithm lives here."""

from __future__ import annotations

import argparse
import sys

from vqclip.cli.options import HelpFormatter
from vqclip.errors import ConfigError

EPILOG = """\
Each line of SPECS is a JSON object of generate options (the names `vqclip generate --help`
shows, with - as _), e.g.
  {"prompt": "a red circle on a blue background", "model": "toy", "iterations": 50}
  {"prompt": "a forest ^ a castle", "model": "toy", "animation": {"frames": 24, "zoom": 1.04}}
Blank lines and lines starting with # are skipped. Rerun the same command to resume."""


def add_parser(subparsers) -> None:
    from vqclip.cli.options import add_config_options
    from vqclip.jobs import JobOptions

    p = subparsers.add_parser(
        "batch",
        help="make the images and animations of a JSON-lines specs file",
        description="Carry out every spec of SPECS into --out: items/<line>/ holds each\n"
        "result, manifest.jsonl one record per finished item. A rerun skips finished items\n"
        "and resumes the others from their checkpoints.",
        epilog=EPILOG,
        formatter_class=lambda prog: _Formatter(prog),
    )
    p.add_argument("specs", metavar="SPECS.jsonl", help="one JSON object of options per line")
    p.add_argument(
        "-o",
        "--out",
        required=True,
        metavar="DIR",
        help="output folder, or an fsspec URL (s3://bucket/path, ...) of shared storage",
    )
    p.add_argument(
        "--group",
        type=int,
        default=None,
        metavar="N",
        help="optimise up to N compatible items (same settings but the prompt, no seed of "
        "their own) together as one batch of latents, memory allowing (default 8; 1: each "
        "alone)",
    )
    add_config_options(p, JobOptions, only=("checkpoint_every",))
    p.add_argument(
        "--retry-failed", action="store_true", help="run the items that failed before again"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("where")
    g.add_argument(
        "--devices",
        nargs="+",
        metavar="DEVICE",
        help="local workers, one per device (default: one per local GPU, else one)",
    )
    g.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run on Ray: the cluster at ADDRESS ('auto': the one this node is in), or a new "
        "local instance when none is given",
    )
    g.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="Ray actors (default: one per cluster GPU, else one per CPU)",
    )
    p.set_defaults(func=run_batch)


class _Formatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _check(args: argparse.Namespace) -> None:
    for name, low in (("group", 1), ("workers", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise ConfigError(f"--{name.replace('_', '-')}={value}: give {low} or more")
    if args.ray is None and (args.workers is not None):
        raise ConfigError("--workers counts Ray actors; give --ray too, or --devices for local")
    if args.ray is not None and args.devices:
        raise ConfigError("--devices picks local workers; on Ray each actor gets its own GPU")


def run_batch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vqclip.batch.runner import DEFAULT_GROUP, prepare_batch, run_local
    from vqclip.cli.generate import stop_requests
    from vqclip.cli.options import given_options
    from vqclip.jobs import JobOptions
    from vqclip.jobs.status import DONE, PARTIAL

    _check(args)
    options = JobOptions(**given_options(args, JobOptions))
    from vqclip.jobs.workers import worker_devices

    devices = worker_devices(names=args.devices) if args.ray is None else [None]
    group = args.group or DEFAULT_GROUP
    plan = prepare_batch(
        args.specs,
        args.out,
        group=group,
        retry_failed=args.retry_failed,
        workers=len(devices),
    )
    for item in plan.invalid:
        print(f"vqclip: error: {item.error}", file=sys.stderr)
    items = len(plan.items)
    finished = len(plan.results) + len(plan.invalid)
    done_before = sum(r["status"] in (DONE, PARTIAL) for r in plan.results.values())
    left = sum(len(unit.lines) for unit in plan.units)
    bad = f" ({len(plan.invalid)} invalid)" if plan.invalid else ""
    print(
        f"batch: {items} items{bad}, {len(plan.results)} finished before, {left} to do in "
        f"{len(plan.units)} runs -> {plan.storage.path('')}",
        file=sys.stderr,
    )
    bar = tqdm(
        total=sum(unit.steps for unit in plan.units),
        disable=args.no_progress,
        unit="it",
        dynamic_ncols=True,
        desc=f"{finished}/{items} items",
    )
    seen: dict[str, int] = {}
    done_items = [finished]

    def on_step(unit) -> None:
        seen[unit.folder] = seen.get(unit.folder, 0) + 1
        bar.update(1)

    def on_unit(unit, records) -> None:
        bar.update(max(0, unit.steps - seen.get(unit.folder, 0)))  # steps a resume skipped
        done_items[0] += len(records)
        bar.set_description(f"{done_items[0]}/{items} items")
        for record in records:
            if record["status"] == "failed":
                bar.write(f"vqclip: line {record['line']} failed: {record['error']}", sys.stderr)

    stop = None
    try:
        if args.ray is not None:
            from vqclip.batch.ray_runner import run_ray

            summary = run_ray(
                plan,
                address=args.ray or None,
                workers=args.workers,
                options=options,
                on_unit=on_unit,
            )
        else:
            with stop_requests() as stop:
                summary = run_local(
                    plan,
                    devices=devices,
                    options=options,
                    on_step=on_step,
                    on_unit=on_unit,
                    should_stop=lambda: stop.signal is not None,
                )
    finally:
        bar.close()
    # the rate of items made by this run: ones that failed (a missing model fails every item
    # in a moment) or were done before are no throughput
    made = summary.done - done_before
    rate = f", {made / summary.seconds * 3600:.0f} items/hour" if made > 0 else ""
    print(
        f"batch: {summary.done} done, {summary.failed} failed, {summary.pending} left "
        f"({summary.seconds:.1f} s{rate}); manifest: {summary.manifest}",
        file=sys.stderr,
    )
    if summary.stopped:
        print(
            "stopped; every unfinished item keeps its checkpoint: rerun the same command to resume",
            file=sys.stderr,
        )
        return stop.exit_code if stop is not None and stop.signal is not None else 130
    return 1 if summary.failed else 0
