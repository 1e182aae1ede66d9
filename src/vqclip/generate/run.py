"""The VQGAN+CLIP loop (Crowson's "z + quantize" method) as a library object that yields steps.

The CLI, the web page and the batch runner only consume `Run.iterate()`; the loop knows
nothing of progress bars, files or videos. One seed drives every random draw through one
`torch.Generator`, whose state is part of a checkpoint, so a resumed run equals an unbroken one.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vqclip.errors import CheckpointError, ConfigError, VQClipError, VQClipWarning
from vqclip.generate.config import GenerateConfig
from vqclip.generate.extension import Extension
from vqclip.generate.losses import clamp_with_grad, init_anchor_loss, tv_loss
from vqclip.generate.memory import check_memory
from vqclip.generate.story import active_part, check_length


class GenerationError(VQClipError):
    """The optimisation cannot go on (e.g. the loss became NaN); the last good image is kept."""


class StepAbandoned(Exception):
    """A step given up inside its long work (a prior's redraw) because the run was asked to
    stop (`Run.check_stop`); the run is back where the step before left it."""


@dataclass
class Step:
    """One optimiser step. Tensors are detached; reading them as floats is the consumer's choice
    (that is where the host sync happens)."""

    index: int  # optimiser steps done, counting this one (1-based)
    losses: dict[str, torch.Tensor]  # prompt label -> (B,) loss before this step's update
    total: torch.Tensor  # (B,) total loss
    image: torch.Tensor  # (B, 3, H, W) in [0, 1]: the image this step's loss was computed on
    lr: float
    failed: torch.Tensor  # (B,) bool: images stopped because their loss became NaN


def _lr_lambda(config: GenerateConfig):
    if config.schedule == "cosine":
        return lambda i: (
            0.5 * (1 + math.cos(math.pi * min(i, config.iterations) / config.iterations))
        )
    if config.schedule == "step":
        return lambda i: config.gamma ** (i // config.step_size)
    return lambda i: 1.0


def _build_optimiser(name: str, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    classes = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "adagrad": torch.optim.Adagrad,
        "adamax": torch.optim.Adamax,
        "radam": torch.optim.RAdam,
        "rmsprop": torch.optim.RMSprop,
        "sgd": torch.optim.SGD,
    }
    return classes[name](params, lr=lr)


class Run:
    """Optimises a batch of VQGAN latents toward the prompts of `config`.

    Models are loaded by name through the weights registry unless given (tests and the batch
    runner pass already-loaded ones to share them between runs). `extensions` are the loop's
    plug-ins (vqclip.generate.extension), e.g. the config's token prior
    (`vqclip.prior.plugin.extensions_for`): the loop itself knows none of them. `state` (a
    `state_dict()`) continues a checkpointed run: its start is the checkpoint's, none is made.
    `should_stop` is asked between the rounds of long work, a start drawn from a prior
    included (see `check_stop`).
    """

    def __init__(
        self,
        config: GenerateConfig,
        *,
        vqgan=None,
        clips=None,
        extensions: Sequence[Extension] = (),
        device=None,
        should_stop: Callable[[], bool] | None = None,
        state: dict | None = None,
    ) -> None:
        from vqclip.clip.model import fold_quick_gelu
        from vqclip.devices import default_size, resolve_device, resolve_precision
        from vqclip.generate.cutouts import CutoutConfig, MakeCutouts

        self.device = torch.device(device) if device is not None else resolve_device(config.device)
        if config.size is None:
            config = config.replace(size=default_size(self.device))
        self.config = config
        # Asked between the parts of a step's long work (a prior's redraws, `check_stop`): a
        # door that wants the run stopped says so here, and the step under way is undone.
        # Given here, it is asked during the start too (a start drawn from a prior, minutes
        # on a CPU), which then raises StepAbandoned from this constructor.
        self.should_stop = should_stop
        self.story = _story(config)
        if vqgan is None or clips is None:
            from vqclip.weights.resolve import load_models

            vqgan, clips = load_models(config.vqgan, config.clip, config.vqgan_config)
        if len(clips) != len(config.clip):
            raise ConfigError(f"clip: {len(config.clip)} names but {len(clips)} models were given")
        if all(w < 0 for w in config.weights_of_clips):
            warnings.warn(
                f"clip_weights={list(config.clip_weights)}: every CLIP's weight is negative, so "
                "each one pushes the image away from the prompts",
                VQClipWarning,
                stacklevel=2,
            )
        # The decoder and CLIP run in the compute dtype (weights cast once, here, and in place);
        # the encoder, the quantiser, the cutouts and the losses stay fp32.
        self.dtype = resolve_precision(config.precision, self.device)
        self.vqgan = vqgan.to(self.device).eval().requires_grad_(False)
        self.vqgan.post_quant_conv.to(self.dtype)
        self.vqgan.decoder.to(self.dtype)
        self.vqgan.decoder.checkpoint = config.checkpoint_decoder
        for clip in clips:  # before the cast, so the scaled weights are rounded once
            fold_quick_gelu(clip)  # the same function, fewer passes; once per shared model
        self.clips = [c.to(self.device, self.dtype).eval().requires_grad_(False) for c in clips]

        f = self.vqgan.downsample_factor
        width, height = config.size
        self.full_grid = (height // f, width // f)  # (h, w) latent tokens
        if min(self.full_grid) < 1:
            raise ConfigError(
                f"size={width}x{height}: smaller than one latent token; this VQGAN needs at least "
                f"{f}x{f} pixels"
            )
        if config.cuda_graphs and len(config.scales) > 1:
            raise ConfigError("cuda_graphs=True: not with several --scales (the grid changes)")
        self.stages = Stages(config.scales, config.iterations, self.full_grid)
        self.stage = 0
        self.grid = self.stages.grid(0)
        self.image_size = (self.grid[1] * f, self.grid[0] * f)  # (W, H) actually produced
        full_size = (self.full_grid[1] * f, self.full_grid[0] * f)
        check_memory(config, self.vqgan, self.clips, full_size, self.device)
        self.extensions = tuple(extensions)
        missing = [n for n in config.plug_ins if n not in {e.name for e in self.extensions}]
        if missing:
            raise ConfigError(
                f"{missing[0]}={getattr(config, missing[0])!r}: this run was given no {missing[0]} "
                "plug-in, so the setting would do nothing; pass extensions="
                "vqclip.prior.plugin.extensions_for(config) (or a ModelCache's extensions)"
            )

        self.rng = torch.Generator(device="cpu").manual_seed(config.seed)
        self.cutouts = [
            MakeCutouts(
                CutoutConfig(
                    cut_size=clip.input_size,
                    cutn=config.cutn,
                    cut_pow=config.cut_pow,
                    augments=tuple(config.augments),
                    noise_fac=config.noise_fac,
                    method=config.cut_method,
                )
            )
            for clip in self.clips
        ]
        self.prompts = self._build_prompts()
        for extension in self.extensions:
            extension.attach(self)

        codebook = self.vqgan.codebook.detach().float()  # (n_embed, e_dim)
        self.z_min = codebook.min(dim=0).values.view(1, -1, 1, 1).to(self.device)
        self.z_max = codebook.max(dim=0).values.view(1, -1, 1, 1).to(self.device)
        self.step_index = 0
        if state is None:
            z = self._init_z().to(self.device)
        else:  # its start is in the checkpoint: a start drawn from a prior takes minutes
            z = torch.zeros(config.batch_size, codebook.shape[1], *self.grid, device=self.device)
        self.z0 = z.detach().clone()
        self.z = z.requires_grad_(True)
        # Adam-like optimisers move each element by about lr per step whatever the gradient's
        # scale, so an lr only means the same on two VQGANs in the units of their codebooks:
        # by default lr counts codebook standard deviations (a codebook with 10x the spread gets
        # 10x the step). lr_scale="none" takes lr as absolute, as nerdyrodent's generate.py does.
        self.codebook_std = float(codebook.std())
        scale = self.codebook_std if config.lr_scale == "codebook" else 1.0
        self.effective_lr = config.lr * scale
        self._new_optimiser(0)
        self.at_step_boundary = True
        self.last_good_z = self.z.detach().clone()
        self.final_z: torch.Tensor | None = None  # the final passes' latent (`_finish`)
        self._graphs = None  # (decode, [encode_image]) replayed as CUDA graphs
        if config.cuda_graphs:
            if self.device.type != "cuda":
                raise ConfigError(f"cuda_graphs=True: needs a CUDA device, not {self.device}")
            from vqclip.generate.graphs import graphed_parts

            self._graphs = graphed_parts(
                self.vqgan,
                self.clips,
                tuple(self.z.shape),
                config.batch_size * config.cutn,
                self.dtype,
                self.device,
            )
        self.failed = torch.zeros(config.batch_size, dtype=torch.bool, device=self.device)
        self.failures: list[tuple[int, int]] = []  # (step, image index) where a loss went NaN
        self.check_every = 1 if self.device.type == "cpu" else 10
        if state is not None:
            self.load_state_dict(state)

    def _new_optimiser(self, start: int) -> None:
        """A fresh optimiser for the current z; the schedule goes on from step `start`."""
        schedule = _lr_lambda(self.config)
        self.optimiser = _build_optimiser(self.config.optimiser, [self.z], self.effective_lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimiser, lambda i: schedule(i + start)
        )

    def notes(self, index: int) -> dict:
        """What the extensions chose for image `index` (e.g. a prior's class), for its
        metadata."""
        out: dict = {}
        for extension in self.extensions:
            out.update(extension.describe(index))
        return out

    def tokens(self) -> torch.Tensor:
        """(B, h, w): the code indices the current latent shows."""
        return self.vqgan.quantize(self.z)[1]

    @torch.no_grad()
    def set_tokens(self, where: torch.Tensor, codes: torch.Tensor) -> None:
        """Set the latent at `where` (B, h, w) to the vectors of `codes` (B, h, w); the latent
        elsewhere and every stopped image are untouched. The optimiser's first moment (Adam's
        exp_avg, SGD's momentum) is zeroed there, since it pointed toward the old code, and its
        second moment is kept: the gradient's scale there is unchanged, so the new token starts
        with small steps instead of the 3x-lr step a fresh moment pair would take after Adam's
        bias correction has worn off."""
        where = (where.to(self.device) & ~self.failed.view(-1, 1, 1))[:, None]  # (B, 1, h, w)
        vectors = F.embedding(codes.to(self.device), self.vqgan.codebook.float())
        self.z.copy_(torch.where(where, vectors.permute(0, 3, 1, 2), self.z))
        for key in ("exp_avg", "momentum_buffer"):
            moment = self.optimiser.state.get(self.z, {}).get(key)
            if isinstance(moment, torch.Tensor) and moment.shape == self.z.shape:
                moment.masked_fill_(where, 0)

    @torch.no_grad()
    def _finish(self) -> None:
        """The extensions' `after_last` hooks (a prior's final passes): the latent they leave
        becomes `final_z`, the one `image()` shows. The loop's own state (z, the optimiser's
        moments, the draws' generator) is put back as the last step left it, so a run continued
        for more steps goes on as a run asked for that many steps from the start would, and
        makes its own final passes at its new end."""
        z, rng = self.z.detach().clone(), self.rng.get_state()
        state = self.optimiser.state.get(self.z, {})
        moments = {k: v.clone() for k, v in state.items() if isinstance(v, torch.Tensor)}
        changed = [extension.after_last(self) for extension in self.extensions]
        if any(changed):
            self.final_z = self.z.detach().clone()
        self.z.copy_(z)
        self.rng.set_state(rng)
        for key, value in moments.items():  # set_tokens zeroes moments in place
            state[key].copy_(value)

    def prompt_gradient(self, grid: torch.Tensor, index: int | None) -> torch.Tensor:
        """(N, C, h, w): the gradient of the whole-image prompt loss (`whole_image_loss`) with
        respect to the latent of code grids (N, h, w) at their codes; row r is scored by image
        `index`'s prompts, or by image r's when `index` is None."""
        z = F.embedding(grid.to(self.device), self.vqgan.codebook.float()).permute(0, 3, 1, 2)
        z = z.detach().requires_grad_(True)
        image = self._decode(z).add(1).div(2).clamp(0, 1)
        loss = self._whole_image_loss(image, index).sum()
        (gradient,) = torch.autograd.grad(loss, z)
        return gradient

    def _enter_stage(self, stage: int, *, carry: bool) -> None:
        """Go to the next scale: the grid grows, the latent is carried up (`carry`: by decoding
        the current image, upscaling it and encoding it again, which keeps what the image shows;
        repeating tokens would not, since a token stands for a patch of texture, not a colour)
        and the optimiser starts afresh there. Without `carry` (a resume) z is a placeholder of
        the new shape that the checkpoint overwrites."""
        f = self.vqgan.downsample_factor
        self.stage = stage
        self.grid = self.stages.grid(stage)
        self.image_size = (self.grid[1] * f, self.grid[0] * f)
        if carry:
            W, H = self.image_size
            img = F.interpolate(
                self.image(), size=(H, W), mode="bicubic", align_corners=False
            ).clamp(0, 1)
            with torch.no_grad():
                z = self.vqgan.encode(img * 2 - 1).float()
        else:
            z = torch.zeros(self.z.shape[0], self.z.shape[1], *self.grid, device=self.device)
        self.z0 = F.interpolate(self.z0, size=self.grid, mode="nearest")
        self.z = z.detach().clone().requires_grad_(True)
        self.last_good_z = self.z.detach().clone()
        self._new_optimiser(self.stages.starts[stage])

    def _build_prompts(self) -> list[list[tuple[str, torch.nn.Module, int | None, int | None]]]:
        """prompts[clip] -> [(label, Prompt, image index or None for every image, story part or
        None for always)], each embedded by its own CLIP. Prompts shared by the batch are
        evaluated batched. Every part of a story is embedded here, once."""
        from vqclip.generate.prompts import (
            Prompt,
            load_image,
            noise_embedding,
            parse_image_prompts,
            parse_story,
            warn_if_cut,
        )

        cfg = self.config
        image_specs = [s for item in cfg.image_prompts for s in parse_image_prompts(item)]
        image_tensors = {s.value: load_image(s.value) for s in image_specs}
        noise_weights = cfg.noise_prompt_weights or (1.0,) * len(cfg.noise_prompt_seeds)
        # One prompt string for the whole batch is shared; one per image is not.
        texts = (
            [(None, cfg.prompt_for(0))] if len(cfg.prompts) <= 1 else list(enumerate(cfg.prompts))
        )
        result = []
        for clip, cutouts in zip(self.clips, self.cutouts, strict=True):
            terms: list[tuple[str, torch.nn.Module, int | None, int | None]] = []
            for spec in image_specs:
                img = image_tensors[spec.value].to(self.device)
                img = F.interpolate(
                    img[None],
                    size=self.image_size[::-1],
                    mode="bicubic",
                    antialias=True,
                    align_corners=False,
                ).clamp(0, 1)
                with torch.no_grad():
                    embed = self._embed(clip.encode_image, cutouts(img, self.rng))
                prompt = Prompt(embed, spec.weight, spec.stop)
                terms.append((f"image:{spec.value}", prompt, None, None))
            for seed, weight in zip(cfg.noise_prompt_seeds, noise_weights, strict=True):
                embed = noise_embedding(seed, clip.config.embed_dim).to(self.device)
                terms.append((f"noise:{seed}", Prompt(embed, weight, float("-inf")), None, None))
            for index, text in texts:
                parts = parse_story(text).parts
                for part, specs in enumerate(parts):
                    for spec in specs:
                        warn_if_cut(spec.value, clip.config.context_length)
                        with torch.no_grad():
                            embed = clip.encode_text_str([spec.value]).float()
                        prompt = Prompt(embed, spec.weight, spec.stop)
                        terms.append((spec.value, prompt, index, part if len(parts) > 1 else None))
            result.append(terms)
        return result

    def _init_z(self) -> torch.Tensor:
        cfg, (h, w), B = self.config, self.grid, self.config.batch_size
        codebook = self.vqgan.codebook.detach().float()
        if cfg.init in ("random", "prior"):
            if cfg.init == "prior":
                idx = self._extension_start().cpu()
            else:
                idx = torch.randint(codebook.shape[0], (B, h, w), generator=self.rng)
            return F.embedding(idx, codebook.cpu()).permute(0, 3, 1, 2).contiguous()  # (B, e, h, w)
        W, H = self.image_size
        if cfg.init == "image":
            from vqclip.generate.prompts import load_image

            img = load_image(cfg.init_image)[None].expand(B, -1, -1, -1)
            img = F.interpolate(
                img, size=(H, W), mode="bicubic", antialias=True, align_corners=False
            ).clamp(0, 1)
        elif cfg.init == "pixels":
            # Random coloured blocks about one latent token in size.
            blocks = torch.rand(B, 3, h, w, generator=self.rng)
            img = F.interpolate(blocks, size=(H, W), mode="nearest")
        else:  # gradient: smooth noise, a few bumps across the image
            coarse = torch.rand(B, 3, 4, 4, generator=self.rng)
            img = F.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=True).clamp(0, 1)
        with torch.no_grad():
            z = self.vqgan.encode(img.to(self.device) * 2 - 1).float()
        return z.cpu()

    def _extension_start(self) -> torch.Tensor:
        """(B, h, w) codes of the first extension that offers a start (init "prior")."""
        for extension in self.extensions:
            codes = extension.start(self)
            if codes is not None:
                return codes
        raise ConfigError("init='prior': no token prior in this run offers a start; set prior")

    @torch.no_grad()
    def best_of(self, grids: torch.Tensor, index: int) -> torch.Tensor:
        """(1, h, w): of candidate grids (K, h, w) for image `index`, the one whose decoded
        image has the lowest prompt loss (`whole_image_loss`)."""
        grids = grids.to(self.device)
        if len(grids) == 1:
            return grids
        z_q = F.embedding(grids, self.vqgan.codebook.float()).permute(0, 3, 1, 2)
        image = self._decode(z_q).add(1).div(2).clamp(0, 1)
        return grids[self.whole_image_loss(image, index).argmin()][None]

    @torch.no_grad()
    def whole_image_loss(self, images: torch.Tensor, index: int) -> torch.Tensor:
        """(N,): the prompt losses of image `index` of the batch (its own and the shared
        prompts, the story part shown now, CLIPs weighted) for N candidate pictures (N, 3, H, W)
        in [0, 1], each seen whole (resized to the CLIP's input, no cutouts or augments)."""
        return self._whole_image_loss(images, index)

    def _whole_image_loss(self, images: torch.Tensor, index: int | None) -> torch.Tensor:
        """`whole_image_loss`, differentiable; `index` None scores row r by image r's prompts
        (N = the batch size)."""
        N = len(images)
        total = torch.zeros(N, device=self.device)
        shown = self.story_parts_shown()
        for clip, terms, weight in zip(
            self.clips, self.prompts, self.config.weights_of_clips, strict=True
        ):
            size = clip.input_size
            view = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
            embeds = self._embed(clip.encode_image, view)[:, None]  # (N, 1, D)
            for _label, prompt, own, part in terms:
                if part is not None and part != shown[own]:
                    continue
                if own is None:
                    total = total + weight * prompt(embeds)[0]
                elif index is None:  # row `own` only
                    loss = prompt(embeds[own : own + 1])[0]
                    total = total + weight * F.pad(loss, (own, N - own - 1))
                elif own == index:
                    total = total + weight * prompt(embeds)[0]
        return total

    def _decode(self, z_q: torch.Tensor, decode=None) -> torch.Tensor:
        """Decoder in the compute dtype, result in fp32; `decode` may be its CUDA graph."""
        return (decode or self.vqgan.decode)(z_q.to(self.dtype)).float()

    def _embed(self, encode, cuts: torch.Tensor) -> torch.Tensor:
        """A CLIP image tower (or its CUDA graph) in the compute dtype, result in fp32."""
        return encode(cuts.to(self.dtype)).float()

    def _forward(self) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        cfg = self.config
        z_q, _ = self.vqgan.quantize(self.z)
        decode, encoders = self._graphs or (
            self.vqgan.decode,
            [clip.encode_image for clip in self.clips],
        )
        image = clamp_with_grad(self._decode(z_q, decode).add(1).div(2), 0, 1)  # (B, 3, H, W)
        B = image.shape[0]
        total = torch.zeros(B, device=self.device)
        losses: dict[str, torch.Tensor] = {}
        # Guides with the same input size share one set of cutouts (one augmentation pass).
        shared: dict[int, torch.Tensor] = {}
        shown = self.story_parts_shown()
        for encode, cutouts, terms, weight in zip(
            encoders, self.cutouts, self.prompts, cfg.weights_of_clips, strict=True
        ):
            size = cutouts.config.cut_size
            if size not in shared:
                shared[size] = cutouts(image, self.rng)  # (B*cutn, 3, S, S)
            cuts = shared[size]
            embeds = self._embed(encode, cuts).view(B, cfg.cutn, -1)  # (B, cutn, D)
            for label, prompt, index, part in terms:
                if part is not None and part != shown[index]:
                    continue  # a story part not shown at this step
                if index is None:
                    loss, _distance = prompt(embeds)  # (B,)
                else:  # this image's own prompt: zero for the others
                    own, _distance = prompt(embeds[index : index + 1])  # (1,)
                    loss = F.pad(own, (index, B - index - 1))  # (B,), no host copy
                total = total + weight * loss
                losses[label] = losses.get(label, 0) + loss.detach()
        if cfg.init_weight:
            anchor = init_anchor_loss(self.z, self.z0, cfg.init_weight)
            losses["init_weight"] = anchor.detach()
            total = total + anchor
        if cfg.tv_weight:
            tv = cfg.tv_weight * tv_loss(image if cfg.tv_on == "image" else self.z)
            losses["tv"] = tv.detach()
            total = total + tv
        for extension in self.extensions:
            for label, term in extension.loss_terms(self, self.z).items():
                losses[label] = term.detach()
                total = total + term
        return total, losses, image

    def story_parts_shown(self) -> dict[int | None, int]:
        """Image index (None: the prompt shared by the batch) -> the story part shown at the
        coming step; it follows from the step index alone, so a resumed run shows the same."""
        cfg = self.config
        return {
            index: active_part(
                self.step_index, parts, cfg.iterations, cfg.change_prompt_every, cfg.prompt_starts
            )
            for index, parts in self.story.items()
        }

    def step(self) -> Step:
        """One optimiser step. An exception raised inside it (a KeyboardInterrupt, or
        `StepAbandoned` from a stop asked for during a prior's redraw) undoes the step: the run
        is left as the step before left it, so a checkpoint written then describes a step
        boundary and a run resumed from it equals one that never stopped. A GenerationError
        (every image's loss NaN) keeps what the check recorded: the run ends there."""
        before = self._snapshot()
        try:
            total, losses, image = self._forward()
            self._check_finite(total)
            self.optimiser.zero_grad(set_to_none=True)
            torch.where(self.failed, 0.0, total).sum().backward()
            self.at_step_boundary = False
            self.updating = self.step_index + 1  # the step whose update (and hooks) is under way
            lr = self.optimiser.param_groups[0]["lr"]
            self.optimiser.step()
            self.scheduler.step()
            with torch.no_grad():
                z = torch.maximum(torch.minimum(self.z, self.z_max), self.z_min)
                self.z.copy_(torch.where(self._failed_4d(), self.last_good_z, z))
            self.step_index += 1
            for extension in self.extensions:
                extension.after_step(self)
            if self.step_index == self.config.iterations and self.extensions:
                self._finish()
            if self.stages.stage_at(self.step_index) != self.stage:
                self._enter_stage(self.stages.stage_at(self.step_index), carry=True)
        except GenerationError:
            self.rng.set_state(before["rng"])
            self.optimiser.zero_grad(set_to_none=True)
            raise
        except BaseException:
            self._undo(before)
            raise
        self.at_step_boundary = True
        return Step(
            self.step_index, losses, total.detach(), image.detach(), lr, self.failed.clone()
        )

    def check_stop(self) -> None:
        """Raise `StepAbandoned` when `should_stop()` says the run should stop. Long work inside
        a step (a prior's redraw: 20 s and more on a CPU) calls it between its parts, so a stop
        need not wait for the work to end; `step` then undoes the step."""
        if self.should_stop is not None and self.should_stop():
            raise StepAbandoned(f"stopped inside step {self.step_index}")

    def _snapshot(self) -> dict:
        """What a step changes, to undo it (`_undo`): the latent's values and the tensor itself
        (a new scale replaces it), the optimiser's and the schedule's states and objects, the
        generator, the stage and the failure records. A few copies of the latent's size."""
        return {
            "z": self.z,
            "z_values": self.z.detach().clone(),
            "optimiser": self.optimiser,
            "optimiser_state": copy.deepcopy(self.optimiser.state_dict()),
            "scheduler": self.scheduler,
            "scheduler_state": copy.deepcopy(self.scheduler.state_dict()),
            "rng": self.rng.get_state(),
            "failed": self.failed.clone(),
            "failures": list(self.failures),
            **{name: getattr(self, name) for name in _REPLACED_BY_A_STEP},
        }

    def _undo(self, before: dict) -> None:
        """Put the run back as `before` (`_snapshot`) found it: a step boundary."""
        self.z = before["z"]
        with torch.no_grad():
            self.z.copy_(before["z_values"])
        self.optimiser = before["optimiser"]
        self.optimiser.load_state_dict(before["optimiser_state"])
        self.optimiser.zero_grad(set_to_none=True)
        self.scheduler = before["scheduler"]
        self.scheduler.load_state_dict(before["scheduler_state"])
        self.rng.set_state(before["rng"])
        self.failed, self.failures = before["failed"], before["failures"]
        for name in _REPLACED_BY_A_STEP:
            setattr(self, name, before[name])
        self.at_step_boundary = True

    def _check_finite(self, total: torch.Tensor) -> None:
        """Checking the loss reads it on the host, a sync that stalls a GPU's queue: done every
        `check_every` steps there (every step on a CPU, where it costs nothing). An image whose
        loss turns NaN is stopped and keeps its latent of the last passed check; the others go
        on (a NaN that slips past an unchecked step makes that image's z NaN, so the next check
        catches it). Only when every image has stopped does the run fail."""
        if self.step_index % self.check_every and self.step_index + 1 != self.config.iterations:
            return
        z_ok = torch.isfinite(self.z.detach()).flatten(1).all(dim=1)  # (B,)
        # Keep the current latent of every image still running whose z is finite (a NaN from
        # the loss alone leaves z good).
        keep = (~self.failed & z_ok).view(-1, 1, 1, 1)
        self.last_good_z = torch.where(keep, self.z.detach(), self.last_good_z)
        new = ~(torch.isfinite(total) & z_ok) & ~self.failed
        if new.any():
            self.failed |= new
            step = self.step_index + 1
            self.failures += [(step, i) for i in new.nonzero().flatten().tolist()]
            if self.failed.all():
                raise GenerationError(
                    f"the loss became {total.tolist()} at step {step}; stopped and kept the "
                    "last good image. Try a lower --learning-rate or another --optimiser."
                )

    @property
    def stopped_images(self) -> dict[int, int]:
        """Image index -> the step at which its loss became NaN (it keeps its last good image)."""
        return {index: step for step, index in self.failures}

    def _failed_4d(self) -> torch.Tensor:
        return self.failed.view(-1, 1, 1, 1)

    def iterate(self) -> Iterator[Step]:
        """Yield steps until `config.iterations` are done (from where a resume left off)."""
        while self.step_index < self.config.iterations:
            yield self.step()

    def run(self) -> torch.Tensor:
        for _ in self.iterate():
            pass
        return self.image()

    @torch.no_grad()
    def image(self, z: torch.Tensor | None = None) -> torch.Tensor:
        """decode(quantise(z)) in [0, 1], (B, 3, H, W): the image the current latent stands for
        (after the run's final passes, the latent they made)."""
        if z is None:
            z = self.z if self.final_z is None else self.final_z
        z_q, _ = self.vqgan.quantize(z)
        return self._decode(z_q).add(1).div(2).clamp(0, 1)

    def last_good_image(self) -> torch.Tensor:
        return self.image(self.last_good_z)

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue as if it never stopped."""
        if not self.at_step_boundary:
            raise CheckpointError(
                f"the run was stopped inside the update of step {self.updating}; its state "
                "is not a step boundary and was not saved"
            )
        state = {
            "format": "vqclip-run",
            "version": 1,
            "config": self.config.to_dict(),
            "step": self.step_index,
            "z": self.z.detach().cpu(),
            "z0": self.z0.cpu(),
            "optimiser": self.optimiser.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": self.rng.get_state(),
            "failed": self.failed.cpu(),
            "failures": [list(f) for f in self.failures],
        }
        if self.final_z is not None:  # a finished run's final passes (`_finish`)
            state["final_z"] = self.final_z.cpu()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state`; CheckpointError (the run untouched) if it does not fit."""
        missing = sorted(set(STATE_KEYS) - set(state))
        if missing:
            raise CheckpointError(f"the run checkpoint lacks {missing}; it cannot be resumed")
        if GenerateConfig.from_dict(state["config"]) != self.config:
            raise CheckpointError("the checkpoint was made with other settings than this run's")
        step = state["step"]
        if not isinstance(step, int) or not 0 <= step <= self.config.iterations:
            raise CheckpointError(f"checkpoint step {step!r} is not in [0, iterations]")
        if self.stages.stage_at(step) != self.stage:
            self._enter_stage(self.stages.stage_at(step), carry=False)
        shapes = {"z": self.z.shape, "z0": self.z.shape, "failed": self.failed.shape}
        for key, shape in shapes.items():
            value = state[key]
            if not isinstance(value, torch.Tensor) or value.shape != shape:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                raise CheckpointError(f"checkpoint {key}: expected shape {tuple(shape)}, got {got}")
        before = self.state_dict()
        try:
            with torch.no_grad():
                self.z.copy_(state["z"].to(self.device))
                self.z0 = state["z0"].to(self.device, torch.float32)
            self.optimiser.load_state_dict(state["optimiser"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.rng.set_state(state["rng"])
            self.failed = state["failed"].to(self.device, torch.bool)
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as e:
            self._restore(before)
            raise CheckpointError(f"the run checkpoint's state does not fit this run: {e}") from e
        self.step_index = step
        self.failures = [(int(s), int(i)) for s, i in state.get("failures", [])]
        self.last_good_z = self.z.detach().clone()
        # the final passes' latent belongs to a run that ends here; one continued for more
        # steps (its config asks for more) makes its own at its new end
        final = state.get("final_z")
        finished = step == self.config.iterations and isinstance(final, torch.Tensor)
        if finished and final.shape == self.z.shape:
            self.final_z = final.to(self.device, torch.float32)
        else:
            self.final_z = None

    def _restore(self, state: dict) -> None:
        with torch.no_grad():
            self.z.copy_(state["z"].to(self.device))
        self.z0 = state["z0"].to(self.device)
        self.optimiser.load_state_dict(state["optimiser"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.rng.set_state(state["rng"])
        self.failed = state["failed"].to(self.device)

    def save_checkpoint(self, directory: str | Path) -> Path:
        from vqclip.generate.checkpoint import save_run_state

        return save_run_state(self.state_dict(), directory)


def _story(config: GenerateConfig) -> dict[int | None, int]:
    """Image index (None: the prompt shared by the batch) -> its number of story parts; a
    ConfigError, before any model loads, when a part would never be shown in this run."""
    shared = len(config.prompts) <= 1
    texts = [(None, config.prompt_for(0))] if shared else list(enumerate(config.prompts))
    from vqclip.generate.prompts import parse_story

    story = {index: parse_story(text).length for index, text in texts}
    every, starts = config.change_prompt_every, config.prompt_starts
    check_length(config.iterations, every, starts, list(story.values()), "step")
    return story


@dataclass(frozen=True)
class Stages:
    """Coarse to fine: `scales` (fractions of the size, the last 1) each get an equal share of
    the iterations (the first the remainder), on a grid of that fraction of `full` tokens."""

    scales: tuple[float, ...]
    iterations: int
    full: tuple[int, int]

    @property
    def starts(self) -> list[int]:
        n = len(self.scales)
        return [self.iterations - (n - i) * (self.iterations // n) if i else 0 for i in range(n)]

    def stage_at(self, step: int) -> int:
        return sum(start <= step for start in self.starts) - 1

    def grid(self, stage: int) -> tuple[int, int]:
        s = self.scales[stage]
        return (max(1, round(self.full[0] * s)), max(1, round(self.full[1] * s)))


STATE_KEYS = ("format", "config", "step", "z", "z0", "optimiser", "scheduler", "rng", "failed")

# What a step may replace (rather than change in place): kept as they are by `Run._snapshot`.
_REPLACED_BY_A_STEP = (
    "step_index",
    "stage",
    "grid",
    "image_size",
    "z0",
    "last_good_z",
    "final_z",
)
