"""Jobs as the API shows them: the stored row with live progress, queue position, the
`vqclip generate` line that makes the same image, and the URLs of its files."""

from __future__ import annotations

from typing import Any

from vqclip.errors import ConfigError
from vqclip.jobs import PREVIEW_FILE, SETTINGS_FILE, THUMB_FILE, VIDEO_FILE, image_names
from vqclip.jobs.continuation import can_continue
from vqclip.serve.command import generate_command
from vqclip.serve.options import public_settings
from vqclip.serve.problems import APIError
from vqclip.serve.service import Service
from vqclip.serve.store import JobRow, is_job_id
from vqclip.weights.registry import PAIRS


def pair_name(config: dict[str, Any]) -> str | None:
    """The model pair whose models a config names, for display (None: models named singly)."""
    for name, pair in PAIRS.items():
        if config.get("vqgan") == pair.vqgan and tuple(config.get("clip", ())) == pair.clips:
            return name
    return None


class JobViews:
    """Jobs as the API shows them: the stored row, live progress, queue position, file URLs."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def files(self, row: JobRow) -> dict[str, Any]:
        folder = self.service.job_dir(row.id)
        base = f"/api/jobs/{row.id}/files/"
        batch = int(row.config.get("batch_size", 1) or 1)
        started = row.started is not None or folder.is_dir()  # a continued job has its folder
        images = [base + n for n in image_names(batch) if started and (folder / n).is_file()]
        names = (VIDEO_FILE, PREVIEW_FILE, THUMB_FILE)
        present = {n: started and (folder / n).is_file() for n in names}
        return {
            "images": images,
            "video": base + VIDEO_FILE if present[VIDEO_FILE] else None,
            "preview": base + PREVIEW_FILE if present[PREVIEW_FILE] else None,
            "thumbnail": base + THUMB_FILE if present[THUMB_FILE] else None,
            "settings": base + SETTINGS_FILE,
            "events": f"/api/jobs/{row.id}/events",
        }

    def show(self, row: JobRow, position: int | None = None) -> dict[str, Any]:
        live = self.service.hub.progress.get(row.id)
        config = public_settings(row.config, self.service.uploads_dir)
        model = row.model or pair_name(config)
        seed = config.get("seed")
        return {
            "id": row.id,
            "status": row.status,
            "prompts": config.get("prompts", []),
            "model": model,
            "settings": config,
            # JavaScript rounds integers above 2**53: the seed again, as a decimal string
            "seed": None if seed is None else str(seed),
            "command": _command(config, model),
            "video": row.video,
            "parent": row.parent,
            "created": row.created,
            "started": row.started,
            "finished": row.finished,
            "step": live["step"] if live else row.step,
            "iterations": config.get("iterations"),
            "position": position,
            "error": row.error,
            "cancel_requested": row.cancel and row.status == "running",
            "progress": live,
            "can_continue": row.status in ("done", "partial", "cancelled")
            and can_continue(self.service.job_dir(row.id)),
            "urls": self.files(row),
        }

    def one(self, job_id: str) -> dict[str, Any]:
        row = self.get_row(job_id)
        return self.show(row, self.service.store.position(row))

    def snapshot(self, job_id: str) -> tuple[JobRow | None, dict[str, Any] | None]:
        row = self.service.store.get(job_id)
        return (
            (row, None) if row is None else (row, self.show(row, self.service.store.position(row)))
        )

    def get_row(self, job_id: str) -> JobRow:
        row = self.service.store.get(job_id) if is_job_id(job_id) else None
        if row is None:
            raise APIError(404, f"no job {job_id!r}")
        return row


def _command(config: dict[str, Any], model: str | None) -> str | None:
    try:
        return generate_command(config, model)
    except ConfigError:  # a model pair since removed from the registry
        return None
