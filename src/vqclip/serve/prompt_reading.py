"""How a prompt is read, before it runs: `POST /api/prompts/parse`.

The page shows, under its prompt box, the parts the generator will make of the text (story
parts, then each "text:weight:stop" prompt) and how many of each text's tokens CLIP keeps. It
asks here rather than re-implementing the grammar: the parse is the package's own
(`parse_story`, as `GenerateConfig` checks a prompt and the run embeds it) and
the count is CLIP's own tokenizer's. Nothing is loaded but the tokenizer's vocabulary: a CLIP's
context length comes from the packaged model's config file, or is CLIP's 77 for the registry's
OpenAI and OpenCLIP models.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from vqclip.clip.tokenizer import CONTEXT_LENGTH, default_tokenizer
from vqclip.errors import ConfigError
from vqclip.generate.config import DEFAULT_MODEL
from vqclip.generate.prompts import parse_story
from vqclip.serve.admission import parse_json_body
from vqclip.serve.problems import APIError
from vqclip.serve.problems import responses as _errors
from vqclip.weights.registry import PACKAGED, PACKAGED_DIR, PAIRS, find_spec

# CLIP reads some 300 characters; CLIP's BPE takes time quadratic in a word's length (9 s for
# 10,000 random letters), so what is read here is capped well above what matters.
MAX_PROMPT_CHARS = 2000  # all prompt strings together
MAX_PROMPTS = 16
MAX_CLIPS = 8


class PromptPart(BaseModel):
    """One "text:weight:stop" prompt as the generator reads it."""

    text: str = Field(description="the text CLIP embeds (weight and stop fields removed)")
    weight: float = Field(description="its weight; negative pushes the image away from it")
    stop: str | None = Field(
        description="the stop field as a number ('0.3', 'inf'); null: none (-inf, the default)"
    )
    tokens: int = Field(description="CLIP tokens of the text (without start and end tokens)")
    kept: int = Field(description="how many of them CLIP reads: the rest is cut")
    cut: bool = Field(description="true when CLIP cuts the text")
    kept_text: str | None = Field(description="what CLIP reads of a cut text (tokens decoded)")


class StoryPart(BaseModel):
    text: str = Field(description="the story part's text (a prompt without '^' is one part)")
    prompts: list[PromptPart]


class PromptString(BaseModel):
    text: str = Field(description="one prompt string as given")
    parts: list[StoryPart] = Field(description="its story parts, in the order they are shown")


class PromptReading(BaseModel):
    """The answer: the parts, or the error the generator would give."""

    context_length: int = Field(
        description="the fewest tokens any of the model's CLIPs reads, start and end included"
    )
    readable_tokens: int = Field(description="context_length - 2: the text's share")
    prompts: list[PromptString] = Field(description="one per prompt string (image of a batch)")
    error: str | None = Field(description="why the prompt cannot run (as the CLI says); null: ok")


REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "prompt": {
            "anyOf": [
                {"type": "string", "maxLength": MAX_PROMPT_CHARS},
                {
                    "type": "array",
                    "items": {"type": "string", "maxLength": MAX_PROMPT_CHARS},
                    "maxItems": MAX_PROMPTS,
                },
            ],
            "description": "the prompt as a job takes it: one string, or one per image",
        },
        "model": {
            "type": "string",
            "enum": list(PAIRS),
            "description": f"the model pair whose CLIPs read it (default {DEFAULT_MODEL!r})",
        },
        "clip": {
            "type": "array",
            "items": {"type": "string", "maxLength": 200},
            "maxItems": MAX_CLIPS,
            "description": "CLIP names instead of the pair's (as the `clip` option)",
        },
    },
    "required": ["prompt"],
    "additionalProperties": False,
}


@functools.lru_cache(maxsize=32)
def context_length(clip: str) -> int:
    """The tokens a CLIP reads: a packaged model's from its config, else OpenAI's 77 (every
    registry CLIP, and the default of a model file's config)."""
    if clip in PACKAGED:
        config = (PACKAGED_DIR / PACKAGED[clip]).with_suffix(".json")
        return int(json.loads(config.read_text(encoding="utf-8"))["context_length"])
    return CONTEXT_LENGTH


def _stop(value: float) -> str | None:
    return None if value == -math.inf else f"{value:g}"


def read_prompts(prompts: list[str], clips: list[str]) -> PromptReading:
    """The parts of `prompts` and their token counts for the shortest context of `clips`."""
    length = min((context_length(c) for c in clips), default=CONTEXT_LENGTH)
    room = length - 2  # the start and end tokens
    tokenizer = default_tokenizer()
    shown = []
    try:
        for text in prompts:
            parts = []
            story = parse_story(text)
            for part, part_specs in zip(story.part_texts, story.parts, strict=True):
                specs = []
                for spec in part_specs:
                    ids = tokenizer.encode(spec.value)
                    cut = len(ids) > room
                    specs.append(
                        PromptPart(
                            text=spec.value,
                            weight=spec.weight,
                            stop=_stop(spec.stop),
                            tokens=len(ids),
                            kept=min(len(ids), room),
                            cut=cut,
                            kept_text=tokenizer.decode(ids[:room]) if cut else None,
                        )
                    )
                parts.append(StoryPart(text=part, prompts=specs))
            shown.append(PromptString(text=text, parts=parts))
    except ConfigError as e:
        return PromptReading(context_length=length, readable_tokens=room, prompts=[], error=str(e))
    return PromptReading(context_length=length, readable_tokens=room, prompts=shown, error=None)


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _request(body: Any) -> tuple[list[str], list[str]]:
    """(prompt strings, CLIP names) of a request; APIError 422 naming what is wrong."""
    if not isinstance(body, dict):
        raise APIError(422, 'give a JSON object: {"prompt": "...", "model": "..."}')
    unknown = sorted(set(body) - set(REQUEST_SCHEMA["properties"]))
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise APIError(422, f"unknown field(s) {names}: give prompt, model, clip")
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise APIError(422, f"prompt={prompt!r}: give a string, or a list of strings")
    if len(prompts) > MAX_PROMPTS or sum(map(len, prompts)) > MAX_PROMPT_CHARS:
        raise APIError(
            422,
            f"prompt: too long to read here: at most {MAX_PROMPTS} strings of "
            f"{MAX_PROMPT_CHARS} characters in all (CLIP reads some 300)",
        )
    if not all(_is_unicode(p) for p in prompts):
        raise APIError(422, "prompt: not valid Unicode (a lone surrogate \\u escape)")
    model = body.get("model", DEFAULT_MODEL)
    if not isinstance(model, str) or model not in PAIRS:
        raise APIError(422, f"model={model!r}: choose a pair from {', '.join(PAIRS)}")
    clips = body.get("clip")
    if clips is None:
        return prompts, list(PAIRS[model].clips)
    if (
        not isinstance(clips, list)
        or not 1 <= len(clips) <= MAX_CLIPS
        or not all(isinstance(c, str) and 0 < len(c) <= 200 for c in clips)
    ):
        raise APIError(422, f"clip={clips!r}: give 1 to {MAX_CLIPS} CLIP names")
    for name in clips:
        spec = find_spec(name)
        if name not in PACKAGED and (spec is None or spec.kind != "clip"):
            raise APIError(
                422,
                f"clip={name!r}: not a CLIP this server knows; give a registry name (vqclip "
                "models list)",
                field="clip",
            )
    return prompts, clips


def build_prompt_router() -> APIRouter:
    router = APIRouter(prefix="/api/prompts")

    @router.post(
        "/parse",
        summary="How a prompt is read: its story parts, each prompt's text, weight and stop, "
        "and the tokens CLIP keeps; a prompt that cannot run gives its error",
        response_model=PromptReading,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": REQUEST_SCHEMA}},
            }
        },
        responses=_errors(401, 413, 415, 422),
    )
    async def parse(request: Request) -> PromptReading:
        body = parse_json_body(await request.body(), request.headers.get("content-type"))
        prompts, clips = _request(body)
        return await asyncio.to_thread(read_prompts, prompts, clips)

    return router
