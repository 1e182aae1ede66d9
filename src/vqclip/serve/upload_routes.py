"""The upload routes: `POST /api/uploads` takes an image (an init image or image prompt) and
answers the `ref` a job names it by; `GET /api/uploads/{name}` serves it back. What an upload
must be, and how it is stored, is `uploads.py`'s."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse

from vqclip.errors import ConfigError
from vqclip.serve.problems import APIError
from vqclip.serve.problems import responses as _errors
from vqclip.serve.service import Service
from vqclip.serve.uploads import is_upload_name, store_upload


def build_upload_router(service: Service) -> APIRouter:
    router = APIRouter(prefix="/api")

    @router.post(
        "/uploads",
        status_code=201,
        summary="Upload an image (init image, image prompt); the body is the image file",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
        responses=_errors(413, 422),
    )
    async def upload(request: Request) -> JSONResponse:
        data = await request.body()
        try:
            stored = await asyncio.to_thread(
                store_upload, data, service.uploads_dir, service.settings.max_upload_pixels
            )
        except ConfigError as e:
            raise APIError(422, str(e), kind="invalid-body")
        answer = {
            "ref": stored.ref,
            "url": f"/api/uploads/{stored.name}",
            "width": stored.width,
            "height": stored.height,
        }
        return JSONResponse(answer, status_code=201)

    @router.get("/uploads/{name}", summary="An uploaded image", responses=_errors(404))
    def get_upload(name: str) -> FileResponse:
        path = service.uploads_dir / name
        if not is_upload_name(name) or not path.is_file():
            raise APIError(404, f"no upload {name!r}")
        return FileResponse(path, media_type="image/png")

    return router
