"""A worker: carries out units (an item, a group of items, an animation) into the batch's
storage, with its models loaded once. A local runner thread and a Ray actor both hold one.

A unit resumes from the checkpoint its folder holds, so a unit cut short by a stop, a kill or
a dead worker goes on where it was. When it is finished, every one of its items gets
`items/<line>/result.json` (the record the manifest is made of), written last and atomically:
an item counts as finished only once its outputs are all in place.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from vqclip.batch.plan import GROUP_FILE, RESULT_FILE, Unit, item_folder
from vqclip.batch.storage import Storage, Workspace
from vqclip.errors import VQClipError
from vqclip.generate.config import GenerateConfig
from vqclip.jobs import SETTINGS_FILE, JobOptions, ModelCache, execute_job
from vqclip.jobs.animation import Animation, run_animation
from vqclip.jobs.status import DONE, FAILED, PARTIAL, STOPPED


class UnitWorker:
    """Carries out units into the storage at `out`, on `device` (None: each config's own)."""

    def __init__(
        self,
        out: str,
        device: str | None = None,
        options: JobOptions | None = None,
        *,
        workers: int = 1,
        models: ModelCache | None = None,
    ) -> None:
        self.storage = Storage(out)
        self.device = device
        self.options = options or JobOptions()
        self.workers = workers
        self.models = models or ModelCache()

    def run(
        self,
        unit: Unit,
        on_step: Callable | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[dict] | None:
        """The result records of the unit's items, or None when `should_stop` stopped it. A
        failure of the unit (bad weights, an error in a run) is recorded, never raised."""
        started = time.perf_counter()
        try:
            if unit.kind == "animation":
                return self._animation(unit, on_step, should_stop, started)
            if unit.kind == "group" and not self._fits(unit):
                records = []
                for single in split_group(unit):
                    done = self.run(single, on_step, should_stop)
                    if done is None:
                        return None
                    records += done
                return records
            return self._image(unit, on_step, should_stop, started)
        except Exception as e:  # one bad unit must not stop the batch; the record says why
            why = str(e) if isinstance(e, VQClipError) else traceback.format_exc(limit=-3)
            return self.fail(unit, why, started)

    def fail(self, unit: Unit, why: str, started: float | None = None) -> list[dict]:
        """Record every item of the unit as failed, for `why`."""
        started = time.perf_counter() if started is None else started
        records = [
            self._record(unit, i, "failed", [], started, error=why) for i in range(len(unit.lines))
        ]
        for record in records:
            self._write_record(record)
        return records

    def _device(self, config: GenerateConfig) -> str | None:
        """The worker's device for configs that leave it to the machine; a spec that names its
        device keeps it."""
        return self.device if config.device == "auto" else None

    def _job(self, workspace: Workspace, config: GenerateConfig, on_step, should_stop) -> dict:
        return dict(
            models=self.models,
            device=self._device(config),
            options=self.options,
            workers=self.workers,
            on_step=on_step,
            should_stop=should_stop,
            on_checkpoint=workspace.push,
        )

    def _image(self, unit: Unit, on_step, should_stop, started: float) -> list[dict] | None:
        with self.storage.workspace(unit.folder) as ws:
            if unit.kind == "group":
                self.storage.write_text(
                    f"{unit.folder}/{GROUP_FILE}", json.dumps({"keys": list(unit.keys)})
                )
            config = _resumed_config(ws.folder, GenerateConfig.from_dict(unit.config))
            job = self._job(ws, config, on_step, should_stop)
            result = execute_job(config, ws.folder, **job)
            if result.status == STOPPED:
                return None
            for path in [ws.folder / SETTINGS_FILE, *result.images]:
                ws.push(path)
            records = []
            for i, key in enumerate(unit.keys):
                status, error = result.status, result.error
                if unit.kind == "group":  # an item is one image of the group's batch
                    stopped = result.stopped_images.get(i)
                    if stopped is not None:
                        status = FAILED
                        error = (
                            f"its loss became NaN at step {stopped}; the image is the last good one"
                        )
                    elif status == PARTIAL:
                        status, error = DONE, None
                image = result.images[i]
                if unit.kind == "group":
                    target = f"{item_folder(key)}/image.png"
                    self.storage.write_bytes(target, image.read_bytes())
                else:
                    target = f"{unit.folder}/{image.name}"
                record = self._record(unit, i, status, [target], started, error=error)
                record.update(seed=result.config.seed, steps=result.steps)
                records.append(record)
        for record in records:
            self._write_record(record)
        return records

    def _animation(self, unit: Unit, on_step, should_stop, started: float) -> list[dict] | None:
        config = GenerateConfig.from_dict(unit.config)
        animation = Animation.from_dict(unit.animation)
        with self.storage.workspace(unit.folder) as ws:
            result = run_animation(
                config,
                animation,
                ws.folder,
                models=self.models,
                device=self._device(config),
                options=self.options,
                workers=self.workers,
                on_step=on_step,
                should_stop=should_stop,
                on_file=ws.push,
                on_discard=ws.discard,
            )
        if result.status == STOPPED:
            return None
        outputs = [f"{unit.folder}/{Path(p).relative_to(ws.folder)}" for p in result.frames]
        if result.video is not None:
            outputs.append(f"{unit.folder}/{result.video.name}")
        record = self._record(unit, 0, result.status, outputs, started, error=result.error)
        record.update(seed=config.seed, frames=len(result.frames))
        self._write_record(record)
        return [record]

    def _fits(self, unit: Unit) -> bool:
        """Whether the group's batch of latents fits the device's free memory."""
        from vqclip.devices import available_memory_bytes, default_size, resolve_device
        from vqclip.generate.memory import estimate_bytes

        config = GenerateConfig.from_dict(unit.config)
        device = resolve_device(self._device(config) or config.device)
        vqgan, clips = self.models.get(config)
        f = vqgan.downsample_factor
        width, height = config.size or default_size(device)
        size = (width // f * f, height // f * f)
        return estimate_bytes(config, vqgan, clips, size) <= available_memory_bytes(device)

    def _record(
        self, unit: Unit, index: int, status: str, outputs, started: float, error=None
    ) -> dict:
        record = {"id": unit.keys[index], "line": unit.lines[index], "spec": unit.specs[index]}
        record["status"] = status
        record.update(outputs=list(outputs), seconds=round(time.perf_counter() - started, 3))
        record["error"] = error
        if unit.kind == "group":
            record["batch_of"] = len(unit.lines)
        return record

    def _write_record(self, record: dict) -> None:
        folder = item_folder(record["id"])
        self.storage.write_text(f"{folder}/{RESULT_FILE}", json.dumps(record))


def split_group(unit: Unit) -> list[Unit]:
    """A group's items as units of one item each, with their own settings and seeds."""
    return [
        Unit(
            "image",
            item_folder(key),
            (line,),
            (key,),
            (spec,),
            (config,),
            config,
            None,
            config["iterations"],
        )
        for line, key, spec, config in zip(
            unit.lines, unit.keys, unit.specs, unit.configs, strict=True
        )
    ]


def _resumed_config(folder: Path, planned: GenerateConfig) -> GenerateConfig:
    """A started job's recorded settings when the plan left its size to the device (the size
    it began with, so a worker with another default size still resumes it); else the plan's."""
    path = folder / SETTINGS_FILE
    if planned.size is not None or not path.is_file():
        return planned
    stored = GenerateConfig.from_dict(json.loads(path.read_text()))
    return stored if stored.replace(size=None) == planned else planned
