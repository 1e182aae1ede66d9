"""Bad-input probe for the `vqclip` command line (a measurement, not a test).

Runs the `vqclip` CLI as a subprocess with 117 distinct bad inputs (bad flags and numbers, bad
prompt syntax, missing or garbage model/config/image files, unwritable outputs, a simulated full
disk, tampered --from-png metadata, damaged --resume checkpoints, signals during loading and
mid-run, and bad `models` / `bench` / `eval` arguments) and counts how each one ends.

Run it with the project's environment (torch and Pillow are needed for the fixtures):

    . .venv/bin/activate
    python research/probes/bad_inputs.py [--json FILE] [--snapshot] [--workers 2]
                                         [--only SUBSTRING] [--keep]

It prints a human table, then a JSON summary on stdout (FILE gets the summary plus every case's
details), and always exits 0. ``--snapshot`` runs a copy of the package taken at the start (put
first on PYTHONPATH), so edits others make to the tree during the ~5 minutes do not mix into the
results; the summary's ``tree_ok`` is false when even a plain good toy run fails (a broken
checkout, not bad-input handling). ``--keep`` keeps each case's folder (its .stderr/.stdout).

What counts
-----------
Each case ends in exactly one outcome, judged on its exit code and stderr:

* ``traceback``  -- "Traceback (most recent call last)" appears in stderr (what we count: the
  CLI let an exception escape instead of explaining the problem);
* ``error``      -- non-zero exit and a message on stderr, no traceback (the wanted behaviour);
* ``silent``     -- non-zero exit with an empty stderr;
* ``killed``     -- ended by a signal (e.g. SIGTERM's default action), no traceback;
* ``accepted``   -- exit 0: the input was taken as valid (not a failure here, but listed, since
  several of these inputs arguably should have been refused);
* ``warned``     -- exit 0 with a "warning" on stderr (e.g. a checkpoint that could not be
  written while the image was);
* ``timeout``    -- still running after the case's timeout (killed; listed);
* ``skipped``    -- not run (e.g. a read-only folder while running as root, or a fixture that
  could not be built); not part of ``total``.

How
---
* Every case runs in its own temporary folder (the cwd), with the offline toy model pair and
  tiny settings (``--model toy -s 64 64 -i 2 -cuts 2 --no-progress``), ``VQCLIP_HOME`` pointed
  at an empty temp cache and ``HF_ENDPOINT`` at a closed local port (nothing is downloaded),
  ``OMP_NUM_THREADS=1``, and an address-space limit (8 GiB) so a "huge size" case cannot take
  the machine's memory down. A small launcher sets limits, resets SIGINT to its default (so
  Python installs its KeyboardInterrupt handler even if the probe was started with SIGINT
  ignored) and execs the CLI, so the pid that gets a signal is the CLI's own.
* The CLI is run through the ``vqclip`` entry point beside the running interpreter (or on
  PATH); failing that, ``python -c "from vqclip.cli import main; ..."``.
* Fixtures are made first with the current code: a real toy PNG (``good.png``, whose metadata
  the --from-png cases tamper with) and a real run checkpoint at step 2 of 3 (``--checkpoint-every
  2``), which the --resume cases damage in copies.
* Full disk: the real ``/dev/full`` is NOT used as ``-o``: vqclip writes atomically (a temp file
  beside the target, then ``os.replace``), which as root would replace the ``/dev/full`` device
  node of this machine with a PNG. The probe makes its own ``full`` character device (``mknod
  c 1 7``, in the case's temp folder) instead. A disk that is full from the start is
  ``RLIMIT_FSIZE`` (writes past 1 KiB fail with EFBIG; SIGXFSZ ignored); a disk that fills up
  during the run (so the write at the end fails, after the up-front output check passed) is a
  320 KiB tmpfs mounted in the case folder and filled once the banner shows (root only; skipped
  otherwise; unmounted afterwards). A third case replaces the output folder by a file mid-run.
* ``TMPDIR`` points into the case folder, so whatever the CLI writes to the temp folder (e.g.
  rescued images) is removed with it.
* Read-only output folder: a chmod-555 folder is skipped when permissions are not enforced
  (root); ``/proc`` (read-only even for root) stands in for it.
* Damaged checkpoints: byte-level damage (truncation, 16 overwritten bytes, garbage) is done to
  the raw state file; content tampering (RNG state of the wrong size, no "optimiser", "z" of the
  wrong shape) loads it with ``torch.load(weights_only=True)``, edits and saves it, recomputing
  the ``vqclip-run sha256=`` header when the file has one, so the run's own checks are what is
  probed, not just the checksum. The state file is found by shape (largest non-JSON file), so
  state.pt and state.bin both work.
* Signal cases send the signal a fixed time after start (0.3 s, 1.0 s: racy, the outcome can
  differ between runs), or when a trigger fires: the banner line (``... steps, seed ...``) in
  stderr, or a text in ``/proc/PID/maps`` (numpy's or torch's shared library, the toy VQGAN's
  mmapped weights), which pins "during import" and "during model loading" down better than a
  clock on a loaded machine.

Keep it under ~5 minutes on 2 cores: 2 workers by default.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

TRACEBACK = "Traceback (most recent call last)"
BANNER = "steps, seed"  # in the line `vqclip X: WxH, N steps, seed S, on cpu ...`
TOY = ["--model", "toy", "-s", "64", "64", "-i", "2", "-cuts", "2", "--no-progress"]
MEMORY_LIMIT = 8 * 2**30
FSIZE_FULL = 1024  # bytes: a "full disk" for RLIMIT_FSIZE cases

LAUNCHER = r"""
import json, os, resource, signal, sys
opts = json.loads(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (opts["as"], opts["as"]))
if opts.get("fsize") is not None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (opts["fsize"], opts["fsize"]))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_DFL)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
cmd = sys.argv[2:]
os.execv(cmd[0], cmd)
"""


# cases


Setup = Callable[[Path, Path], None]  # (case folder, fixtures folder)


@dataclass
class Case:
    name: str
    group: str
    argv: list[str]  # after `vqclip`; "{t}" = case folder, "{fx}" = fixtures folder
    setup: Setup | None = None
    # (what, seconds after start) or (what, seconds after a trigger, trigger): `what` is a signal
    # to send or a function of the case folder to call; the trigger is "banner" (BANNER shows in
    # stderr) or "maps:TEXT" (TEXT shows in the process's /proc/PID/maps: a shared library or
    # mmapped weights file was loaded)
    signals: list[tuple] = field(default_factory=list)
    teardown: Callable[[Path], None] | None = None  # always called after the run
    timeout: float = 60.0
    fsize: int | None = None
    needs: tuple[str, ...] = ()  # fixtures it needs: "png", "ckpt"
    skip: Callable[[], str | None] | None = None


def gen(*extra: str, prompt: str | None = "a red circle") -> list[str]:
    """`generate PROMPT <toy settings> EXTRA`; later flags override the toy ones."""
    return ["generate", *([prompt] if prompt is not None else []), *TOY, *extra]


# setup helpers


def write(name: str, data: bytes | str) -> Setup:
    def setup(t: Path, fx: Path) -> None:
        path = t / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    return setup


def mkdir(name: str, mode: int | None = None) -> Setup:
    def setup(t: Path, fx: Path) -> None:
        (t / name).mkdir(parents=True, exist_ok=True)
        if mode is not None:
            os.chmod(t / name, mode)

    return setup


def full_node(name: str) -> Setup:
    """A private /dev/full (char 1,7): writes fail with ENOSPC."""

    def setup(t: Path, fx: Path) -> None:
        os.mknod(t / name, 0o666 | __import__("stat").S_IFCHR, os.makedev(1, 7))

    return setup


def chain(*setups: Setup) -> Setup:
    def setup(t: Path, fx: Path) -> None:
        for s in setups:
            s(t, fx)

    return setup


def copy_good(name: str, cut: float | None = None) -> Setup:
    """good.png (or its first `cut` fraction) under another name."""

    def setup(t: Path, fx: Path) -> None:
        data = (fx / "good.png").read_bytes()
        if cut is not None:
            data = data[: int(len(data) * cut)]
        (t / name).write_bytes(data)

    return setup


def png_meta(text: str | None, name: str = "bad.png") -> Setup:
    """good.png's pixels with `text` as its "vqclip" iTXt chunk (None: no metadata)."""

    def setup(t: Path, fx: Path) -> None:
        from PIL import Image, PngImagePlugin

        info = PngImagePlugin.PngInfo()
        if text is not None:
            info.add_itxt("vqclip", text)
        with Image.open(fx / "good.png") as img:
            img.load()
            img.save(t / name, format="PNG", pnginfo=info)

    return setup


def png_config(change: Callable[[dict], None]) -> Setup:
    """good.png whose metadata's config went through `change` (in place)."""

    def setup(t: Path, fx: Path) -> None:
        meta = json.loads((fx / "good_meta.json").read_text())
        change(meta["config"])
        png_meta(json.dumps(meta))(t, fx)

    return setup


def set_key(key: str, value) -> Callable[[dict], None]:
    def change(config: dict) -> None:
        config[key] = value

    return change


def del_key(key: str) -> Callable[[dict], None]:
    def change(config: dict) -> None:
        config.pop(key, None)

    return change


def ckpt_copy(name: str = "run") -> Setup:
    def setup(t: Path, fx: Path) -> None:
        shutil.copytree(fx / "ckpt", t / name)

    return setup


def state_file(run: Path) -> Path:
    """The checkpoint's state file, whatever it is called (state.pt, state.bin, ...): the
    largest file in the folder that is not JSON."""
    files = [p for p in run.iterdir() if p.is_file() and p.suffix != ".json"]
    if not files:
        raise FileNotFoundError(f"no state file in {run}")
    return max(files, key=lambda p: p.stat().st_size)


CHECKSUM_PREFIX = b"vqclip-run sha256="  # state.bin: `vqclip-run sha256=<hex>\n` + torch.save bytes


def split_state(data: bytes) -> tuple[bytes | None, bytes]:
    """(checksum header or None, torch.save payload)."""
    if data.startswith(CHECKSUM_PREFIX):
        header, _, payload = data.partition(b"\n")
        return header, payload
    return None, data


def join_state(header: bytes | None, payload: bytes) -> bytes:
    """The file again, its checksum recomputed for the new payload (when it has one)."""
    if header is None:
        return payload
    import hashlib

    return CHECKSUM_PREFIX + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def ckpt_bytes(change: Callable[[bytes], bytes]) -> Setup:
    """The state file's raw bytes changed (the checksum, if any, NOT fixed up)."""

    def setup(t: Path, fx: Path) -> None:
        ckpt_copy()(t, fx)
        path = state_file(t / "run")
        path.write_bytes(change(path.read_bytes()))

    return setup


def ckpt_state(change: Callable[[dict], None]) -> Setup:
    """The checkpoint, loaded with weights_only=True, changed in place and saved again, with a
    valid checksum: the run's own checks, not the file's integrity check, must catch it."""

    def setup(t: Path, fx: Path) -> None:
        import io

        import torch

        ckpt_copy()(t, fx)
        path = state_file(t / "run")
        header, payload = split_state(path.read_bytes())
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        change(state)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        path.write_bytes(join_state(header, buffer.getvalue()))

    return setup


def overwrite_middle(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + b"\xde\xad\xbe\xef" * 4 + data[mid + 16 :]


def _rng_wrong(state: dict) -> None:
    import torch

    state["rng"] = torch.zeros(7, dtype=torch.uint8)


def _z_wrong(state: dict) -> None:
    import torch

    state["z"] = torch.zeros(1, 16, 8, 8)


def _config_json_edit(t: Path, fx: Path) -> None:
    ckpt_copy()(t, fx)
    path = t / "run" / "config.json"
    summary = json.loads(path.read_text())
    summary["config"]["size"] = [128, 128]
    summary["config"]["prompts"] = ["a blue square"]
    path.write_text(json.dumps(summary))


def _state_del(key: str) -> Callable[[dict], None]:
    def change(state: dict) -> None:
        state.pop(key, None)

    return change


def permissions_not_enforced() -> str | None:
    probe = Path(tempfile.mkdtemp(prefix="vqclip-perm-"))
    try:
        os.chmod(probe, 0o555)
        try:
            (probe / "x").write_text("x")
        except PermissionError:
            return None
        return (
            "permissions are not enforced (running as root); /proc stands in (output-readonly-fs)"
        )
    finally:
        os.chmod(probe, 0o755)
        shutil.rmtree(probe, ignore_errors=True)


def cannot_mknod() -> str | None:
    t = Path(tempfile.mkdtemp(prefix="vqclip-mknod-"))
    try:
        full_node("full")(t, t)
        return None
    except OSError as e:
        return f"cannot mknod a private /dev/full ({e.strerror}); the real one is not used"
    finally:
        shutil.rmtree(t, ignore_errors=True)


SMALL_FS = "320k"  # a tmpfs just above the output check's 256 KiB test write


def mount_small(name: str) -> Setup:
    """A tiny tmpfs at NAME (needs root; see cannot_mount)."""

    def setup(t: Path, fx: Path) -> None:
        (t / name).mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={SMALL_FS}", "tmpfs", str(t / name)],
            check=True,
            capture_output=True,
        )

    return setup


def unmount(name: str) -> Callable[[Path], None]:
    def teardown(t: Path) -> None:
        if os.path.ismount(t / name):
            subprocess.run(["umount", "-l", str(t / name)], check=False, capture_output=True)

    return teardown


def fill_disk(t: Path) -> None:
    """Fill the case's small tmpfs (once the run has started, after the output check)."""
    with contextlib.suppress(OSError), open(t / "small" / ".filler", "wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()


def replace_out_with_file(t: Path) -> None:
    """The output folder disappears mid-run and a file takes its name."""
    shutil.rmtree(t / "out", ignore_errors=True)
    (t / "out").write_text("not a folder any more\n")


def cannot_mount() -> str | None:
    if shutil.which("mount") is None or os.geteuid() != 0:
        return "cannot mount a small tmpfs (needs root and mount(8))"
    t = Path(tempfile.mkdtemp(prefix="vqclip-mount-"))
    try:
        mount_small("small")(t, t)
        return None
    except (OSError, subprocess.CalledProcessError) as e:
        return f"cannot mount a small tmpfs: {e}"
    finally:
        unmount("small")(t)
        shutil.rmtree(t, ignore_errors=True)


GARBAGE = bytes(range(256)) * 8
YAML_GARBAGE = "model: [unclosed\n  params: {: :\n\t- tab"


def build_cases() -> list[Case]:
    C = Case
    g = "generate"
    cases = [
        # prompts
        C("prompt-empty", g, gen(prompt="")),
        C("prompt-a:b:c:d", g, gen(prompt="a:b:c:d")),
        C("prompt-weight-nan-word", g, gen(prompt="text:notanumber")),
        C("prompt-stop-x", g, gen(prompt="text:1:x")),
        C("prompt-weight-nan", g, gen(prompt="text:nan")),
        C("prompt-only-weight", g, gen(prompt=":1")),
        C("prompt-empty-pipe", g, gen(prompt="a red circle||")),
        # int options
        C("iterations-zero", g, gen("-i", "0")),
        C("iterations-word", g, gen("-i", "abc")),
        C("seed-huge", g, gen("-sd", str(2**64))),
        C("batch-zero", g, gen("-b", "0")),
        C("batch-huge", g, gen("-b", "1000000"), timeout=60),
        C("cutn-zero", g, gen("-cuts", "0")),
        C("cutn-huge", g, gen("-cuts", "1000000"), timeout=60),
        C("step-size-zero", g, gen("--schedule", "step", "--step-size", "0")),
        C("checkpoint-every-negative", g, gen("--checkpoint-every", "-1")),
        C("noise-weights-count", g, gen("-nps", "1", "2", "-npw", "1", prompt=None)),
        # float options
        C("cut-pow-nan", g, gen("-cutp", "nan")),
        C("noise-fac-negative", g, gen("--noise-fac", "-1")),
        C("init-weight-inf", g, gen("-iw", "inf")),
        C("tv-weight-nan", g, gen("--tv-weight", "nan")),
        C("lr-zero", g, gen("-lr", "0")),
        C("lr-nan", g, gen("-lr", "nan")),
        C("lr-huge", g, gen("-lr", "1e300")),
        C("lr-word", g, gen("-lr", "fast")),
        C("gamma-nan", g, gen("--schedule", "step", "--gamma", "nan")),
        C("clip-weights-count", g, gen("--clip-weights", "1", "2", "3")),
        # size
        C("size-zero", g, gen("-s", "0", "0")),
        C("size-tiny", g, gen("-s", "1", "1")),
        C("size-one-value", g, gen("-s", "64")),
        C("size-float", g, gen("-s", "64.5", "64")),
        C("size-huge", g, gen("-s", "100000", "100000"), timeout=60),
        # choices
        C("cut-method-bad", g, gen("-cutm", "nope")),
        C("precision-bad", g, gen("--precision", "fp8")),
        C("augment-unknown", g, gen("-aug", "Zz")),
        C("device-bad", g, gen("--device", "tpu")),
        C("device-cuda-absent", g, gen("--device", "cuda:7")),
        C("cuda-graphs-on-cpu", g, gen("--cuda-graphs")),
        # models and weights files
        C("model-unknown", g, ["generate", "x", "--model", "nope", "-s", "64", "64"]),
        C("vqgan-unknown", g, gen("--vqgan", "nope")),
        C("clip-unknown", g, gen("--clip", "nope")),
        C("vqgan-uncached-offline", g, gen("--vqgan", "vqgan_imagenet_f16_16384")),
        C("vqgan-missing-path", g, gen("--vqgan", "/nonexistent/model.ckpt")),
        C("vqgan-folder", g, gen("--vqgan", "{t}/folder"), mkdir("folder")),
        C("vqgan-txt", g, gen("--vqgan", "{t}/notes.txt"), write("notes.txt", "hello\n")),
        C("vqgan-garbage-ckpt", g, gen("--vqgan", "{t}/g.ckpt"), write("g.ckpt", GARBAGE)),
        C(
            "vqgan-garbage-safetensors",
            g,
            gen("--vqgan", "{t}/g.safetensors"),
            write("g.safetensors", GARBAGE),
        ),
        C("vqgan-garbage-yaml", g, gen("--vqgan", "{t}/g.yaml"), write("g.yaml", YAML_GARBAGE)),
        C(
            "clip-garbage-safetensors",
            g,
            gen("--clip", "{t}/c.safetensors"),
            write("c.safetensors", GARBAGE),
        ),
        C(
            "vqgan-config-missing",
            g,
            gen("--vqgan", "{t}/g.ckpt", "--vqgan-config", "{t}/no.yaml"),
            write("g.ckpt", GARBAGE),
        ),
        C(
            "vqgan-config-garbage",
            g,
            gen("--vqgan", "{t}/g.ckpt", "--vqgan-config", "{t}/c.yaml"),
            chain(write("g.ckpt", GARBAGE), write("c.yaml", YAML_GARBAGE)),
        ),
        # init image and image prompts
        C("init-image-missing", g, gen("-ii", "{t}/none.png")),
        C("init-image-text", g, gen("-ii", "{t}/a.txt"), write("a.txt", "hello\n")),
        C("init-image-zero-bytes", g, gen("-ii", "{t}/z.png"), write("z.png", b"")),
        C("init-image-text-as-png", g, gen("-ii", "{t}/t.png"), write("t.png", "not a png\n")),
        C(
            "init-image-truncated",
            g,
            gen("-ii", "{t}/half.png"),
            copy_good("half.png", 0.5),
            needs=("png",),
        ),
        C("image-prompt-missing", g, gen("-ip", "{t}/none.png")),
        C(
            "image-prompt-bad-weight",
            g,
            gen("-ip", "{t}/i.png:abc"),
            copy_good("i.png"),
            needs=("png",),
        ),
        # outputs
        C("output-is-folder", g, gen("-o", "{t}/out"), mkdir("out")),
        C(
            "output-readonly-folder",
            g,
            gen("-o", "{t}/ro/x.png"),
            mkdir("ro", 0o555),
            skip=permissions_not_enforced,
        ),
        C("output-readonly-fs", g, gen("-o", "/proc/vqclip-probe.png")),
        C("output-dev-full-node", g, gen("-o", "{t}/full"), full_node("full"), skip=cannot_mknod),
        C("output-disk-full-at-start", g, gen("-o", "{t}/x.png"), fsize=FSIZE_FULL),
        C(
            "output-disk-fills-mid-run",
            g,
            gen("-i", "8", "-o", "{t}/small/x.png"),
            mount_small("small"),
            signals=[(fill_disk, 0.0, "banner")],
            teardown=unmount("small"),
            skip=cannot_mount,
        ),
        C(
            "checkpoint-disk-fills-mid-run",
            g,
            gen("-i", "8", "--checkpoint-every", "1", "--checkpoint-dir", "{t}/small/run"),
            mount_small("small"),
            signals=[(fill_disk, 0.0, "banner")],
            teardown=unmount("small"),
            skip=cannot_mount,
        ),
        C(
            "output-folder-vanishes-mid-run",
            g,
            gen("-i", "8", "-o", "{t}/out/x.png"),
            mkdir("out"),
            signals=[(replace_out_with_file, 0.0, "banner")],
        ),
        C("output-ext-jpg", g, gen("-o", "{t}/x.jpg")),
        C("output-ext-txt", g, gen("-o", "{t}/x.txt")),
        C("output-no-ext", g, gen("-o", "{t}/x")),
        C(
            "checkpoint-dir-dev-full",
            g,
            gen("--checkpoint-every", "1", "--checkpoint-dir", "{t}/full"),
            full_node("full"),
            skip=cannot_mknod,
        ),
        C(
            "checkpoint-dir-is-file",
            g,
            gen("--checkpoint-every", "1", "--checkpoint-dir", "{t}/f.txt"),
            write("f.txt", "x"),
        ),
        C("save-every-negative", g, gen("-se", "-1")),
        C("save-every-word", g, gen("-se", "often")),
        C("video-plain", g, gen("--video", "-o", "{t}/x.png")),
        # --from-png
        C("from-png-missing", "from-png", ["generate", "--from-png", "{t}/none.png"]),
        C(
            "from-png-not-png",
            "from-png",
            ["generate", "--from-png", "{t}/t.png"],
            write("t.png", "not a png\n"),
        ),
        C(
            "from-png-no-metadata",
            "from-png",
            ["generate", "--from-png", "{t}/bad.png"],
            png_meta(None),
            needs=("png",),
        ),
        C(
            "from-png-json-broken",
            "from-png",
            ["generate", "--from-png", "{t}/bad.png"],
            png_meta('{"config": {"prompts": ['),
            needs=("png",),
        ),
        C(
            "from-png-no-config-key",
            "from-png",
            ["generate", "--from-png", "{t}/bad.png"],
            png_meta('{"step": 2}'),
            needs=("png",),
        ),
    ]
    config_tampers = [
        ("missing-prompts", del_key("prompts")),
        ("unknown-key", set_key("colour", "red")),
        ("size-abc", set_key("size", "abc")),
        ("iterations-str", set_key("iterations", "10")),
        ("seed-float", set_key("seed", 1.5)),
        ("prompts-int", set_key("prompts", 5)),
        ("clip-null", set_key("clip", None)),
        ("augments-int", set_key("augments", 3)),
    ]
    for name, change in config_tampers:
        cases.append(
            C(
                f"from-png-{name}",
                "from-png",
                ["generate", "--from-png", "{t}/bad.png", "--no-progress"],
                png_config(change),
                needs=("png",),
            )
        )
    r = "resume"
    resume = ["generate", "--resume", "{t}/run", "--no-progress", "-o", "{t}/out.png"]
    cases += [
        C("resume-missing", r, resume),
        C("resume-empty", r, resume, mkdir("run")),
        C("resume-garbage", r, resume, ckpt_bytes(lambda b: GARBAGE), needs=("ckpt",)),
        C("resume-truncated", r, resume, ckpt_bytes(lambda b: b[: len(b) // 2]), needs=("ckpt",)),
        C("resume-bytes-overwritten", r, resume, ckpt_bytes(overwrite_middle), needs=("ckpt",)),
        C("resume-rng-wrong-size", r, resume, ckpt_state(_rng_wrong), needs=("ckpt",)),
        C("resume-no-optimiser", r, resume, ckpt_state(_state_del("optimiser")), needs=("ckpt",)),
        C("resume-z-wrong-shape", r, resume, ckpt_state(_z_wrong), needs=("ckpt",)),
        C("resume-config-json-edited", r, resume, _config_json_edit, needs=("ckpt",)),
        # signals
        C("sigint-at-0.3s", "signal", gen("-i", "40"), signals=[(signal.SIGINT, 0.3)]),
        C("sigint-at-1.0s", "signal", gen("-i", "40"), signals=[(signal.SIGINT, 1.0)]),
        C(
            "sigint-numpy-importing",
            "signal",
            gen("-i", "40"),
            signals=[(signal.SIGINT, 0.0, "maps:_multiarray_umath")],
        ),
        C(
            "sigint-torch-importing",
            "signal",
            gen("-i", "40"),
            signals=[(signal.SIGINT, 0.0, "maps:libtorch_python")],
        ),
        C(
            "sigint-model-loading",
            "signal",
            gen("-i", "40"),
            signals=[(signal.SIGINT, 0.0, "maps:toy_vqgan")],
        ),
        C("sigint-mid-run", "signal", gen("-i", "200"), signals=[(signal.SIGINT, 1.5, "banner")]),
        C(
            "sigint-twice-mid-run",
            "signal",
            gen("-i", "200"),
            signals=[(signal.SIGINT, 1.5, "banner"), (signal.SIGINT, 1.52, "banner")],
        ),
        C("sigterm-mid-run", "signal", gen("-i", "200"), signals=[(signal.SIGTERM, 1.5, "banner")]),
        # models
        C("models-list-bad-kind", "models", ["models", "list", "--kind", "tpu"]),
        C("models-download-unknown", "models", ["models", "download", "nope"]),
        C("models-path-unknown", "models", ["models", "path", "nope"]),
        C("models-convert-unknown", "models", ["models", "convert", "nope"]),
        C(
            "models-convert-garbage-ckpt",
            "models",
            ["models", "convert", "{t}/g.ckpt"],
            write("g.ckpt", GARBAGE),
        ),
        # bench
        C("bench-size-zero", "bench", ["bench", "-s", "0", "0", "--steps", "1", "--warmup", "0"]),
        C("bench-size-word", "bench", ["bench", "-s", "abc", "64"]),
        C("bench-cutn-zero", "bench", ["bench", "-s", "64", "64", "-cuts", "0", "--steps", "1"]),
        C("bench-clip-unknown", "bench", ["bench", "-s", "64", "64", "--clip", "nope"]),
        # eval (bounded: one prompt, two steps)
        C("eval-steps-negative", "eval", ["eval", "--limit", "1", "--steps", "-1", "--cutn", "2"]),
        C("eval-every-zero", "eval", ["eval", "--every", "0"]),
        C("eval-prompts-missing", "eval", ["eval", "--prompts", "{t}/none.txt", "--steps", "2"]),
        C("eval-methods-bad", "eval", ["eval", "--methods", "nope", "--limit", "1"]),
    ]
    return cases


# running


def cli_command() -> list[str]:
    here = Path(sys.executable).parent / "vqclip"
    found = str(here) if here.is_file() else shutil.which("vqclip")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from vqclip.cli import main; sys.exit(main())"]


SNAPSHOT: Path | None = None  # set by --snapshot: a frozen copy of the package, on PYTHONPATH


def snapshot_package(root: Path) -> Path:
    """Copy the `vqclip` package as it is now (others may edit it while the probe runs)."""
    import importlib.util

    spec = importlib.util.find_spec("vqclip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("cannot find the vqclip package to snapshot")
    source = Path(next(iter(spec.submodule_search_locations)))
    target = root / "_src"
    shutil.copytree(source, target / "vqclip", ignore=shutil.ignore_patterns("__pycache__"))
    return target


def child_env(fx: Path, t: Path | None = None) -> dict[str, str]:
    """The CLI's environment; TMPDIR inside the case folder (vqclip rescues images there)."""
    env = dict(os.environ)
    tmp = (t or fx) / ".tmp"
    tmp.mkdir(exist_ok=True)
    env["TMPDIR"] = str(tmp)
    if SNAPSHOT is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SNAPSHOT), env.get("PYTHONPATH")]))
    env.update(
        VQCLIP_HOME=str(fx / "home"),
        HF_ENDPOINT="http://127.0.0.1:9",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.pop("PYTHONWARNINGS", None)
    return env


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def run_one(case: Case, root: Path, fx: Path, cli: list[str], fixtures_ok: dict) -> dict:
    result = {"name": case.name, "group": case.group, "argv": case.argv}
    missing = [n for n in case.needs if not fixtures_ok.get(n)]
    reason = case.skip() if case.skip else None
    if missing:
        reason = f"fixture {', '.join(missing)} could not be built"
    if reason:
        return {
            **result,
            "outcome": "skipped",
            "note": reason,
            "rc": None,
            "seconds": 0.0,
            "last_stderr": "",
        }
    t = root / case.name
    t.mkdir(parents=True)
    try:
        return _run(case, result, t, fx, cli)
    finally:
        if case.teardown:
            case.teardown(t)


def _run(case: Case, result: dict, t: Path, fx: Path, cli: list[str]) -> dict:
    try:
        if case.setup:
            case.setup(t, fx)
    except Exception as e:  # the probe's own setup failed: say so, do not count it
        return {
            **result,
            "outcome": "skipped",
            "note": f"setup failed: {e!r}",
            "rc": None,
            "seconds": 0.0,
            "last_stderr": "",
        }
    argv = [a.replace("{t}", str(t)).replace("{fx}", str(fx)) for a in case.argv]
    opts = {"as": MEMORY_LIMIT, "fsize": case.fsize}
    cmd = [sys.executable, "-c", LAUNCHER, json.dumps(opts), *cli, *argv]
    err_path, out_path = t / ".stderr", t / ".stdout"
    started = time.monotonic()
    with open(err_path, "wb") as err, open(out_path, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=t,
            env=child_env(fx, t),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        pending = list(case.signals)
        seen: dict[str, float] = {}  # trigger -> when it fired
        sent = []
        timed_out = False
        while proc.poll() is None:
            now = time.monotonic() - started
            for trigger in {s[2] for s in pending if len(s) > 2} - seen.keys():
                if _fired(trigger, proc.pid, err_path):
                    seen[trigger] = now
            for s in list(pending):
                due = s[1] if len(s) == 2 else (seen[s[2]] + s[1] if s[2] in seen else None)
                if due is not None and now >= due:
                    if callable(s[0]):
                        s[0](t)
                        sent.append(f"{s[0].__name__}@{now:.2f}s")
                    else:
                        with contextlib.suppress(ProcessLookupError):
                            proc.send_signal(s[0])
                            sent.append(f"{signal.Signals(s[0]).name}@{now:.2f}s")
                    pending.remove(s)
            if now > case.timeout:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.002 if pending else 0.02)
    seconds = time.monotonic() - started
    rc = proc.returncode
    stderr = err_path.read_text(errors="replace")
    if TRACEBACK in stderr:
        outcome = "traceback"
    elif timed_out:
        outcome = "timeout"
    elif rc == 0:
        outcome = "warned" if "warning" in stderr.lower() else "accepted"
    elif rc < 0:
        outcome = "killed"
    elif stderr.strip():
        outcome = "error"
    else:
        outcome = "silent"
    result.update(outcome=outcome, rc=rc, seconds=round(seconds, 2), last_stderr=last_line(stderr))
    if sent:
        result["actions"] = sent
    if case.signals and len(sent) < len(case.signals):
        result["note"] = "the run ended before every signal or action was done"
    if outcome == "traceback":
        result["exception"] = _exception_line(stderr)
    return result


def _fired(trigger: str, pid: int, err_path: Path) -> bool:
    if trigger == "banner":
        return BANNER in err_path.read_text(errors="replace")
    if trigger.startswith("maps:"):
        try:
            return trigger[5:] in Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            return False
    raise ValueError(f"unknown trigger {trigger!r}")


def _exception_line(stderr: str) -> str:
    """The last line that looks like `SomeError: ...` after the last traceback."""
    tail = stderr[stderr.rfind(TRACEBACK) :]
    for line in reversed(tail.splitlines()):
        head = line.split(":", 1)[0].strip()
        plain = bool(head) and not line.startswith(" ")
        name_like = head.replace(".", "").replace("_", "").isalnum()
        kind = head.endswith(("Error", "Exception", "Interrupt", "Exit")) or "." in head
        if plain and name_like and kind:
            return line.strip()
    return last_line(stderr)


def build_fixtures(fx: Path, cli: list[str]) -> dict:
    """good.png (real toy PNG) and ckpt/ (a real checkpoint at step 2 of 3)."""
    fx.mkdir(parents=True, exist_ok=True)
    (fx / "home").mkdir(exist_ok=True)
    env = child_env(fx)
    jobs = {
        "png": [*cli, "generate", "a red circle", *TOY, "-o", str(fx / "good.png")],
        "ckpt": [
            *cli,
            "generate",
            "a red circle",
            *TOY,
            "-i",
            "3",
            "--checkpoint-every",
            "2",
            "--checkpoint-dir",
            str(fx / "ckpt"),
            "-o",
            str(fx / "ckpt.png"),
            "-sd",
            "7",
        ],
    }
    procs = {
        k: subprocess.Popen(v, cwd=fx, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for k, v in jobs.items()
    }
    ok, notes = {}, {}
    for k, p in procs.items():
        try:
            _, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        ok[k] = p.returncode == 0
        if not ok[k]:
            notes[k] = last_line(err.decode(errors="replace"))
    if ok["png"]:
        from PIL import Image

        with Image.open(fx / "good.png") as img:
            text = img.text.get("vqclip")  # type: ignore[attr-defined]
        if text is None:
            ok["png"], notes["png"] = False, "good.png carries no vqclip metadata"
        else:
            (fx / "good_meta.json").write_text(text)
    if ok["ckpt"]:
        try:
            notes["ckpt_file"] = state_file(fx / "ckpt").name
        except OSError:
            ok["ckpt"], notes["ckpt"] = False, "no checkpoint was written to ckpt/"
    return {"ok": ok, "notes": notes}


def table(results: list[dict]) -> str:
    rows = [("CASE", "GROUP", "OUTCOME", "RC", "SEC", "LAST STDERR LINE")]
    for r in results:
        rows.append(
            (
                r["name"],
                r["group"],
                r["outcome"],
                "" if r["rc"] is None else str(r["rc"]),
                f"{r['seconds']:.1f}",
                (r.get("note") if r["outcome"] == "skipped" else r["last_stderr"])[:110],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in rows
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the JSON summary to this file")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", help="run only cases whose name contains this")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument(
        "--snapshot",
        action="store_true",
        help="run a copy of the package taken at the start (put first on PYTHONPATH), so edits "
        "made to the tree while the probe runs do not mix into its results",
    )
    args = parser.parse_args()
    global SNAPSHOT

    started = time.monotonic()
    cases = build_cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names repeat"
    if args.only:
        cases = [c for c in cases if args.only in c.name]
    cli = cli_command()
    root = Path(tempfile.mkdtemp(prefix="vqclip-bad-inputs-"))
    try:
        if args.snapshot:
            SNAPSHOT = snapshot_package(root)
        fx = root / "_fixtures"
        fixtures = build_fixtures(fx, cli)
        with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
            results = list(pool.map(lambda c: run_one(c, root, fx, cli, fixtures["ok"]), cases))
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    ran = [r for r in results if r["outcome"] != "skipped"]
    counts: dict[str, int] = {}
    for r in ran:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    by_exception: dict[str, list[str]] = {}
    for r in ran:
        if r["outcome"] == "traceback":
            kind = r.get("exception", "").split(":", 1)[0] or "?"
            by_exception.setdefault(kind, []).append(r["name"])
    summary = {
        "cli": cli,
        "snapshot": str(SNAPSHOT) if SNAPSHOT else None,
        "total": len(ran),
        "tracebacks": counts.get("traceback", 0),
        "outcomes": counts,
        "skipped": [
            {"name": r["name"], "why": r.get("note", "")}
            for r in results
            if r["outcome"] == "skipped"
        ],
        "fixtures": fixtures,
        "tree_ok": all(fixtures["ok"].values()),
        "by_exception": by_exception,
        "traceback_cases": [
            {
                "name": r["name"],
                "group": r["group"],
                "exception": r.get("exception", ""),
                "last_stderr": r["last_stderr"],
            }
            for r in ran
            if r["outcome"] == "traceback"
        ],
        "not_refused": [
            {"name": r["name"], "outcome": r["outcome"], "last_stderr": r["last_stderr"]}
            for r in ran
            if r["outcome"] in ("accepted", "warned", "timeout", "killed", "silent")
        ],
        "seconds": round(time.monotonic() - started, 1),
        "cases": results,
    }
    print(table(results))
    if not summary["tree_ok"]:
        print(
            "\nWARNING: a plain good toy run fails with this tree "
            f"({fixtures['notes']}); the results measure a broken checkout",
        )
    print()
    print(
        f"{summary['total']} cases run, {summary['tracebacks']} tracebacks, outcomes {counts}, "
        f"{len(summary['skipped'])} skipped, {summary['seconds']} s"
    )
    print()
    text = json.dumps({k: v for k, v in summary.items() if k != "cases"}, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a measurement: report the probe's own failure, still exit 0
        import traceback

        traceback.print_exc()
        print(f"bad_inputs probe failed: {e!r}", file=sys.stderr)
    sys.exit(0)
