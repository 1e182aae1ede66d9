"""MaskGIT's bidirectional token transformer (valeoai's PyTorch reproduction) as a masked token
model, with the sampler its authors draw with.

MaskGIT (Chang et al., "MaskGIT: Masked Generative Image Transformer", arXiv 2202.04200) reads a
grid of VQGAN codes in which some positions hold a mask token and predicts every position at
once. The weights this module loads are those of the PyTorch reproduction by V. Besnier and
M. Chen (arXiv 2310.14400), https://github.com/valeoai/MaskGIT-pytorch (also
llvictorll/MaskGIT-pytorch; MIT licence): `MaskGIT_ImageNet_256.pth` (16x16 codes) and
`MaskGIT_ImageNet_512.pth` (32x32), over a VQGAN of 1024 codes, class-conditional on the 1000
ImageNet classes. No code of theirs is
imported or copied; the names, shapes and formulas below were read from their
`Network/transformer.py` (the model), `Trainer/vit.py` (`sample`, `adap_sche`) and
`Trainer/trainer.py` (`save_network`).

The model (their `MaskTransformer`, at their "small" size: hidden 768, depth 24, 16 heads, MLP
3072). The token table `tok_emb` has codebook + 1 + classes + 1 rows (1024 codes, the mask token
1024, class c as token 1025 + c, and "no class" 2025, which classifier-free guidance reads).
The sequence is the grid, row-major, then one class token (the class comes after the grid), plus
a learned `pos_emb` (1, h*w + 1, hidden). Then `first_layer` (LayerNorm eps 1e-12, Linear, GELU,
LayerNorm eps 1e-12, Linear), `depth` pre-norm blocks (LayerNorm eps 1e-5, `nn.MultiheadAttention`
with packed q/k/v weights; LayerNorm eps 1e-5, Linear, GELU, Linear), `last_layer` (LayerNorm
eps 1e-12, Linear, GELU, LayerNorm eps 1e-12), and logits `x @ tok_emb.weight.T + bias` with a
learned bias per position and token, of which they keep the grid positions and the codes and
mask token. Their dropouts (p=0.1, after each of the two first-layer LayerNorms, after the first
last-layer LayerNorm, in the attention weights, after the MLP's GELU and after the MLP) do
nothing at inference and are left out here; empty `nn.Identity` slots keep the `nn.Sequential`
indices, and so the parameter names, theirs. Attention is computed with
`scaled_dot_product_attention` (the fused kernels, bf16 included) from the same packed weights.
The number of heads is not in the weights: theirs is 16.

Their checkpoints are `torch.save({"iter", "global_epoch", "model_state_dict",
"optimizer_state_dict"})`; under DDP they save `model.module.state_dict()`, so the names carry no
`module.` prefix (one is stripped all the same, should a file carry one).
"""

from __future__ import annotations

import math
import operator
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from vqclip.clip.model import SelfAttention
from vqclip.errors import CheckpointError, ConfigError
from vqclip.safeload import load_torch_checkpoint
from vqclip.statedict import load_strict

# Their LayerNorms around the transformer (first_layer, last_layer) use eps 1e-12 (BERT's);
# the blocks' pre-norms are nn.LayerNorm's default, 1e-5.
OUTER_NORM_EPS = 1e-12
BLOCK_NORM_EPS = 1e-5


@dataclass(frozen=True)
class MaskGITConfig:
    """Sizes of a MaskGIT transformer: a `grid` x `grid` token grid over `codebook_size` codes,
    `n_classes` classes, `depth` blocks of `heads` heads over `hidden` channels, MLP `mlp` wide.
    The defaults are the released 256 px model's (grid 32 for the 512 px one)."""

    codebook_size: int = 1024
    n_classes: int = 1000
    hidden: int = 768
    depth: int = 24
    heads: int = 16
    mlp: int = 3072
    grid: int = 16

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"MaskGIT {name}={value!r}: expected an integer >= 1")
        if self.hidden % self.heads:
            raise ConfigError(
                f"MaskGIT hidden={self.hidden} is not divisible by heads={self.heads}"
            )

    @property
    def vocab(self) -> int:
        """Rows of the token table: the codes, the mask token, the classes, "no class"."""
        return self.codebook_size + 1 + self.n_classes + 1

    @property
    def n_tokens(self) -> int:
        """Grid positions (the class token not counted)."""
        return self.grid * self.grid

    @property
    def mask_token(self) -> int:
        return self.codebook_size

    @property
    def no_class_token(self) -> int:
        """The token standing for a dropped class (what classifier-free guidance reads)."""
        return self.codebook_size + 1 + self.n_classes

    def class_token(self, label: int) -> int:
        return self.codebook_size + 1 + label

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], *, heads: int = 16, n_classes: int = 1000
    ) -> MaskGITConfig:
        """The sizes a state dict in MaskGIT's names was saved at. `heads` is not in the weights
        (16 for theirs); the token table holds codebook + classes + 2 rows, so `n_classes` (1000
        for theirs) tells the codebook. Raises CheckpointError if the sizes do not fit."""
        needed = ("tok_emb.weight", "pos_emb", "bias", "transformer.layers.0.1.fn.net.0.weight")
        absent = [k for k in needed if k not in state_dict]
        if absent:
            raise CheckpointError(
                f"not a MaskGIT transformer state dict: it lacks {', '.join(absent)}"
            )
        vocab, hidden = state_dict["tok_emb.weight"].shape
        positions = state_dict["pos_emb"].shape[1]  # (1, h*w + 1, hidden)
        grid = math.isqrt(positions - 1)
        layer = re.compile(r"transformer\.layers\.(\d+)\.")
        depth = len({m.group(1) for k in state_dict if (m := layer.match(k))})
        codebook = vocab - 2 - n_classes
        if grid * grid != positions - 1:
            raise CheckpointError(
                f"MaskGIT pos_emb has {positions} positions: not a square grid plus a class token"
            )
        if codebook < 1:
            raise CheckpointError(
                f"MaskGIT tok_emb has {vocab} rows: too few for {n_classes} classes "
                "(expected codes + 1 mask + classes + 1 'no class')"
            )
        if tuple(state_dict["bias"].shape) != (positions, vocab):
            raise CheckpointError(
                f"MaskGIT bias is {tuple(state_dict['bias'].shape)}, expected "
                f"({positions}, {vocab}) from pos_emb and tok_emb"
            )
        mlp = state_dict["transformer.layers.0.1.fn.net.0.weight"].shape[0]
        try:
            return cls(codebook, n_classes, hidden, depth, heads, mlp, grid)
        except ConfigError as e:
            raise CheckpointError(f"MaskGIT state dict: {e}") from None


class _Attention(nn.Module):
    """Their `Attention`: the attention module sits at `.mha`."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.mha = SelfAttention(dim, heads, causal=False)  # nn.MultiheadAttention's names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mha(x)


class _FeedForward(nn.Module):
    """Their `FeedForward`: `net` = Linear, GELU, (Dropout), Linear, (Dropout)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Identity(), nn.Linear(hidden, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _PreNorm(nn.Module):
    """fn(LayerNorm(x)); the residual is added by the caller, as in theirs."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class _Encoder(nn.Module):
    """Their `TransformerEncoder`: `layers.N.0` is the attention, `layers.N.1` the MLP."""

    def __init__(self, config: MaskGITConfig) -> None:
        super().__init__()
        c = config
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    _PreNorm(c.hidden, _Attention(c.hidden, c.heads)),
                    _PreNorm(c.hidden, _FeedForward(c.hidden, c.mlp)),
                ]
            )
            for _ in range(c.depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = x + attn(x)
            x = x + ff(x)
        return x


class MaskGITTransformer(nn.Module):
    """MaskGIT's `MaskTransformer` for inference, with its parameter names (load_state_dict with
    strict=True takes their `model_state_dict` as it is)."""

    def __init__(self, config: MaskGITConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.tok_emb = nn.Embedding(c.vocab, c.hidden)
        self.pos_emb = nn.Parameter(torch.zeros(1, c.n_tokens + 1, c.hidden))
        # nn.Identity stands where theirs has Dropout (indices 1 and 5), keeping the indices.
        self.first_layer = nn.Sequential(
            nn.LayerNorm(c.hidden, eps=OUTER_NORM_EPS),
            nn.Identity(),
            nn.Linear(c.hidden, c.hidden),
            nn.GELU(),
            nn.LayerNorm(c.hidden, eps=OUTER_NORM_EPS),
            nn.Identity(),
            nn.Linear(c.hidden, c.hidden),
        )
        self.transformer = _Encoder(c)
        self.last_layer = nn.Sequential(
            nn.LayerNorm(c.hidden, eps=OUTER_NORM_EPS),
            nn.Identity(),
            nn.Linear(c.hidden, c.hidden),
            nn.GELU(),
            nn.LayerNorm(c.hidden, eps=OUTER_NORM_EPS),
        )
        self.bias = nn.Parameter(torch.zeros(c.n_tokens + 1, c.vocab))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, h*w, codebook_size + 1) over the codes and the mask token at each grid
        position, as theirs returns them, from `tokens` (B, h*w + 1): the grid row-major, then
        the class token (`config.class_token(c)` or `config.no_class_token`)."""
        c = self.config
        if tokens.dim() != 2 or tokens.shape[1] != c.n_tokens + 1:
            raise ConfigError(
                f"MaskGIT reads (B, {c.n_tokens + 1}) tokens (a {c.grid}x{c.grid} grid and a "
                f"class token), got {tuple(tokens.shape)}"
            )
        x = self.tok_emb(tokens) + self.pos_emb  # (B, T, C)
        x = self.last_layer(self.transformer(self.first_layer(x)))
        # The output layer is the token table itself (tied), plus a bias per position and token.
        logits = x @ self.tok_emb.weight.T + self.bias  # (B, T, vocab)
        return logits[:, : c.n_tokens, : c.codebook_size + 1]


class MaskGITPrior:
    """A loaded MaskGIT transformer behind the masked-model interface vqclip's masked resampler
    calls: logits over the image codes at every position of a `window` grid, given the grid (mask
    token where unknown) and a class per row (None: MaskGIT's "no class")."""

    def __init__(
        self, transformer: MaskGITTransformer, source: str, ignored: Sequence[str] = ()
    ) -> None:
        c = transformer.config
        self.transformer = transformer
        self.source = source
        self.n_codes = c.codebook_size
        self.mask_token = c.mask_token
        self.window = (c.grid, c.grid)
        self.n_classes = c.n_classes
        self.class_names: tuple[str, ...] = ()  # the loader fills ImageNet's
        # how a prompt's class is chosen (vqclip.prior.classes): the templates its names are
        # embedded in, and the zero-shot probability below which no class is taken
        self.class_templates: tuple[str, ...] = ("a photo of a {}.",)
        self.class_threshold = 0.0
        self.ignored = tuple(ignored)

    def _class_tokens(self, labels: Sequence[int | None], batch: int) -> list[int]:
        if len(labels) != batch:
            raise ConfigError(f"{len(labels)} labels for a batch of {batch} grids")
        c = self.transformer.config
        tokens = []
        for label in labels:
            if label is None:
                tokens.append(c.no_class_token)
                continue
            try:
                index = operator.index(label)
            except TypeError:
                index = -1
            if isinstance(label, bool) or not 0 <= index < self.n_classes:
                raise ConfigError(
                    f"MaskGIT class {label!r} is not one of 0..{self.n_classes - 1}",
                    field="prior_class",
                )
            tokens.append(c.class_token(index))
        return tokens

    def _forward(self, tokens: torch.Tensor, labels: Sequence[int | None]) -> torch.Tensor:
        """Float32 logits (B, h*w, n_codes + 1), the mask token's column included, as MaskGIT's
        sampler softmaxes them."""
        n = self.window[0] * self.window[1]
        if tokens.dim() != 2 or tokens.shape[1] != n:
            raise ConfigError(
                f"MaskGIT {self.source} reads {self.window[0]}x{self.window[1]} grids as (B, {n}) "
                f"tokens, got {tuple(tokens.shape)}"
            )
        if tokens.numel() and not 0 <= int(tokens.min()) <= int(tokens.max()) <= self.n_codes:
            raise ConfigError(
                f"MaskGIT tokens must be codes 0..{self.n_codes - 1} or the mask token "
                f"{self.mask_token}, got values {int(tokens.min())}..{int(tokens.max())}"
            )
        classes = self._class_tokens(labels, tokens.shape[0])
        device = self.transformer.tok_emb.weight.device
        cls = torch.tensor(classes, dtype=torch.long, device=device)[:, None]  # (B, 1)
        with torch.no_grad():
            seq = torch.cat([tokens.to(device=device, dtype=torch.long), cls], dim=1)
            return self.transformer(seq).float()

    def logits(self, tokens: torch.Tensor, labels: Sequence[int | None]) -> torch.Tensor:
        """Float32 logits (B, h*w, n_codes) over the image codes (mask and class columns
        dropped) from `tokens` (B, h*w), values in [0, n_codes] with n_codes the mask token, and
        one class per row in `labels` (None: "no class"); computed in the model's dtype."""
        return self._forward(tokens, labels)[..., : self.n_codes]

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> MaskGITPrior:
        """Moves and/or casts the transformer; returns self."""
        if dtype is not None and not dtype.is_floating_point:
            raise ConfigError(f"MaskGIT runs in a floating-point dtype, not {dtype}")
        moves = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        if moves:
            self.transformer.to(**moves)
        return self


def _strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def load_maskgit(
    path: str | os.PathLike, *, heads: int = 16, n_classes: int = 1000
) -> MaskGITPrior:
    """A MaskGIT checkpoint (their `torch.save` dict) as a float32, eval, frozen prior on the CPU.

    The sizes come from the weights (`heads` and `n_classes` are not in them: theirs are 16 and
    1000). The file's other top-level keys (their optimizer state, iteration, epoch) are listed
    in the prior's `ignored`. Raises CheckpointError if the file holds no `model_state_dict` or
    its names or shapes do not match.
    """
    path = Path(path)
    checkpoint = load_torch_checkpoint(path)
    state_dict = checkpoint.get("model_state_dict")
    if not isinstance(state_dict, Mapping):
        held = ", ".join(map(str, checkpoint)) or "nothing"
        raise CheckpointError(
            f"{path} is not a MaskGIT checkpoint: it has no 'model_state_dict' (it holds: {held})"
        )
    # Their save_network stores model.module.state_dict() under DDP: no prefix is expected, but
    # a file saved from the wrapper itself would carry one.
    state_dict = _strip_prefix(state_dict, "module.")
    config = MaskGITConfig.from_state_dict(state_dict, heads=heads, n_classes=n_classes)
    with torch.device("meta"):
        model = MaskGITTransformer(config)
    model.to_empty(device="cpu")  # float32 storage; load_strict copies (and casts) into it
    load_strict(model, state_dict, source=path.name)
    model.float().eval().requires_grad_(False)
    ignored = tuple(str(k) for k in checkpoint if k != "model_state_dict")
    return MaskGITPrior(model, path.name, ignored)


# --- MaskGIT's sampler (their `MaskGIT.sample` with randomize="linear", sched_mode="arccos") ---


@dataclass(frozen=True)
class SamplerSettings:
    """Their evaluation settings (README table; main.py's defaults for 256 px): `steps` rounds,
    Gumbel noise `gumbel_temperature`, guidance `guidance`, `softmax_temperature` (multiplies the
    logits)."""

    steps: int
    gumbel_temperature: float
    guidance: float
    softmax_temperature: float = 1.0


DEFAULTS_256 = SamplerSettings(steps=8, gumbel_temperature=4.5, guidance=3.0)
DEFAULTS_512 = SamplerSettings(steps=15, gumbel_temperature=7.0, guidance=2.8)


def sampler_defaults(window: tuple[int, int]) -> SamplerSettings:
    """Their settings for a 16x16 window (256 px) or a 32x32 one (512 px)."""
    return DEFAULTS_512 if max(window) >= 32 else DEFAULTS_256


def _check_steps(steps: int) -> None:
    # Their schedule starts at arccos(1) = 0 and divides by its sum, and the noise and guidance
    # ramps divide by steps - 1: one step is undefined there.
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 2:
        raise ConfigError(f"MaskGIT steps={steps!r}: expected an integer >= 2", field="steps")


def arccos_schedule(n: int, steps: int) -> list[int]:
    """How many of `n` tokens each of `steps` rounds reveals, as their `adap_sche` computes it
    (in float32): r = linspace(1, 0, steps), share = arccos(r) / (pi/2), counts =
    round(share / sum(share) * n) (half to even), zeros raised to 1, and the last count corrected
    so the counts sum to n. That correction can leave the last count below the one before it, or
    at or below 0 when `steps` is large for `n` (e.g. n=16, steps=12): `maskgit_draw` refuses
    such a schedule, which theirs cannot run either."""
    _check_steps(steps)
    if n < 1:
        raise ConfigError(f"MaskGIT schedule over {n} tokens: expected at least 1")
    r = torch.linspace(1, 0, steps)
    share = torch.arccos(r) / (math.pi * 0.5)
    counts = (share / share.sum() * n).round()
    counts[counts == 0] = 1
    counts[-1] += n - counts.sum()
    return [int(t) for t in counts.int()]


def guidance_weight(w: float, step: int, steps: int) -> float:
    """Their classifier-free guidance weight at round `step` (0-based) of `steps`: it grows
    linearly from 0 at the first round to `w` at the last."""
    _check_steps(steps)
    return w * (step / (steps - 1))


def guided_logits(cond: torch.Tensor, uncond: torch.Tensor, weight: float) -> torch.Tensor:
    """Classifier-free guidance on logits: (1 + weight) * cond - weight * uncond."""
    return (1 + weight) * cond - weight * uncond


def tempered_probs(logits: torch.Tensor, softmax_temperature: float) -> torch.Tensor:
    """Their softmax "temperature" multiplies the logits (above 1 sharpens)."""
    return torch.softmax(logits * softmax_temperature, dim=-1)


def gumbel_confidence(
    log_p_drawn: torch.Tensor,
    step: int,
    steps: int,
    temperature: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Their confidence in each drawn token: its log-probability (of the tempered softmax) plus
    standard Gumbel noise times `temperature` * (1 - step / (steps - 1)), so the noise falls
    linearly to none at the last round. The noise is drawn in float64 on the CPU from
    `generator`; the result is float64 (theirs adds numpy's float64 noise), on the device of
    `log_p_drawn`."""
    _check_steps(steps)
    if generator.device.type != "cpu":
        raise ConfigError("MaskGIT draws its noise from a CPU torch.Generator")
    ratio = step / (steps - 1)
    u = torch.rand(log_p_drawn.shape, generator=generator, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(torch.float64).tiny)))
    noise = temperature * gumbel * (1 - ratio)
    return log_p_drawn.to(torch.float64) + noise.to(log_p_drawn.device)


def maskgit_draw(
    prior: MaskGITPrior,
    batch: int,
    labels: Sequence[int | None],
    generator: torch.Generator,
    *,
    steps: int | None = None,
    gumbel_temperature: float | None = None,
    guidance: float | None = None,
    softmax_temperature: float | None = None,
) -> torch.Tensor:
    """A whole (batch, h, w) grid of codes (long, on the CPU) drawn as their `sample` draws it,
    from a grid of mask tokens; settings left None are theirs for the prior's window.

    Each round: the logits over the codes and the mask token (guided: conditional and "no class"
    rows in one batch, `guided_logits` with `guidance_weight`), `tempered_probs`, one token drawn
    per position, `gumbel_confidence` of the draws, -inf where already revealed, and the
    `arccos_schedule` count of most confident positions revealed. As in theirs, the drawn tokens
    are written wherever the confidence reaches the k-th highest (ties included) while exactly
    the top k leave the mask; a drawn mask token stays in the grid, and the final grid is clamped
    to the codes (a mask token left there becomes the last code). Every random draw comes from
    `generator` (a CPU generator).
    """
    defaults = sampler_defaults(prior.window)
    steps = defaults.steps if steps is None else steps
    r_temp = defaults.gumbel_temperature if gumbel_temperature is None else gumbel_temperature
    w = defaults.guidance if guidance is None else guidance
    sm_temp = defaults.softmax_temperature if softmax_temperature is None else softmax_temperature
    if len(labels) != batch:
        raise ConfigError(f"{len(labels)} labels for a batch of {batch} grids")
    h, wd = prior.window
    n = h * wd
    schedule = arccos_schedule(n, steps)
    if min(schedule) < 1:
        raise ConfigError(
            f"MaskGIT's schedule of {steps} steps over {n} tokens reveals {schedule}: "
            "too many steps for the grid",
            field="steps",
        )
    code = torch.full((batch, n), prior.mask_token, dtype=torch.long)  # (B, n)
    masked = torch.ones(batch, n, dtype=torch.bool)
    rows = torch.arange(batch)[:, None]
    for step, t in enumerate(schedule):
        if w != 0:
            both = prior._forward(torch.cat([code, code]), [*labels, *[None] * batch]).cpu()
            cond, uncond = both.chunk(2)  # (B, n, n_codes + 1) each
            logits = guided_logits(cond, uncond, guidance_weight(w, step, steps))
        else:
            logits = prior._forward(code, labels).cpu()
        probs = tempered_probs(logits, sm_temp)  # (B, n, V) with V = n_codes + 1
        drawn = torch.multinomial(probs.view(batch * n, -1), 1, generator=generator)
        drawn = drawn.view(batch, n)
        p_drawn = probs.gather(2, drawn[..., None])[..., 0]  # (B, n)
        conf = gumbel_confidence(torch.log(p_drawn), step, steps, r_temp, generator)
        conf[~masked] = -math.inf  # never redraw a revealed position
        top, chosen = torch.topk(conf, k=t, dim=-1)  # (B, t)
        reveal = masked & (conf >= top[:, -1:])
        code[reveal] = drawn[reveal]
        masked[rows, chosen] = False
    return code.clamp(0, prior.n_codes - 1).view(batch, h, wd)
