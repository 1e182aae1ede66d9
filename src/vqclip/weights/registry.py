"""The registry of pretrained weights vqclip knows: name -> where to get its files, how to use it.

Each file lists its hosts in the order the downloader tries them (`hosts.py` records what is
known of each, and where that was learned; docs/weights.md has the table). VQGAN files come from
taming-transformers' own hosts and Hugging Face Hub mirrors at fixed commits; file names match
nerdyrodent's download_models.sh, so files users already have can be copied into the cache as
they are. CLIP files are OpenCLIP's Hub safetensors copies, which hold OpenAI/OpenCLIP state-dict
names (not TorchScript).

A sha256 is pinned only where two independent sources publish the same value; elsewhere the
file's `sha256_note` says why not, and the downloader records the first download's hash beside
it and checks later loads against it (trust on first use).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from vqclip.clip.config import OPENAI_MEAN, OPENAI_STD
from vqclip.errors import ConfigError
from vqclip.weights import hosts
from vqclip.weights.spec import CONVERTED_FILENAMES as CONVERTED_FILENAMES
from vqclip.weights.spec import KINDS as KINDS
from vqclip.weights.spec import FileSpec, Host, WeightSpec

INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


def _heibox(folder: str, path: str) -> str:
    # taming's Seafile shares: a folder link plus the file's path inside it.
    return f"https://heibox.uni-heidelberg.de/d/{folder}/files/?p={path}&dl=1"


_NO_HASH_DIRECT = (
    "no sha256 published by the host; the hash of the first download is recorded beside the file"
)
_NO_HASH_HF = (
    "no sha256 from two independent sources could be confirmed offline when this registry was "
    "written; the hash of the first download is recorded (trust on first use)"
)


def _vqgan(
    name: str,
    stem: str,
    ckpt: str | None = None,
    yaml: str | None = None,
    *,
    ckpt_mirrors: tuple[str, ...] = (),
    yaml_mirrors: tuple[str, ...] = (),
    ckpt_hosts: tuple[Host, ...] = (),
    yaml_hosts: tuple[Host, ...] = (),
    ckpt_sha256: str | None = None,
    yaml_sha256: str | None = None,
    sha256_note: str = _NO_HASH_DIRECT,
    size_bytes: int | None,
    yaml_size_bytes: int = 2_000,
    licence: str,
    description: str,
    aliases: tuple[str, ...] = (),
) -> WeightSpec:
    """A taming VQGAN: `stem`.yaml + `stem`.ckpt, each from a URL (+ mirrors) and/or hosts."""
    files = (
        FileSpec(
            "config",
            f"{stem}.yaml",
            url=yaml,
            mirrors=yaml_mirrors,
            hosts=yaml_hosts,
            size_bytes=yaml_size_bytes,
            sha256=yaml_sha256,
            sha256_note=sha256_note,
        ),
        FileSpec(
            "checkpoint",
            f"{stem}.ckpt",
            url=ckpt,
            mirrors=ckpt_mirrors,
            hosts=ckpt_hosts,
            size_bytes=size_bytes,
            sha256=ckpt_sha256,
            sha256_note=sha256_note,
        ),
    )
    return WeightSpec(name, "vqgan", files, licence, description, aliases)


def _clip(
    name: str,
    preset: str,
    hf_repo: str,
    hf_filename: str,
    *,
    quick_gelu: bool,
    input_size: int,
    size_bytes: int,
    description: str,
    aliases: tuple[str, ...],
    licence: str,
    openai_pt_sha256: str | None = None,
    mean: tuple[float, float, float] = OPENAI_MEAN,
    std: tuple[float, float, float] = OPENAI_STD,
) -> WeightSpec:
    note = _NO_HASH_HF
    if openai_pt_sha256:
        note += (
            f"; OpenAI's own URL embeds sha256 {openai_pt_sha256}, but that is of the TorchScript "
            ".pt file, which vqclip does not load"
        )
    host = Host(
        hf_repo=hf_repo,
        hf_filename=hf_filename,
        note="the Hub repository open_clip's pretrained table names for this model; fetched at "
        "branch main (no commit recorded here)",
    )
    ckpt = FileSpec(
        "checkpoint", f"{name}.safetensors", hosts=(host,), size_bytes=size_bytes, sha256_note=note
    )
    return WeightSpec(
        name,
        "clip",
        (ckpt,),
        licence,
        description,
        aliases,
        preset=preset,
        quick_gelu=quick_gelu,
        input_size=input_size,
        mean=mean,
        std=std,
    )


_TAMING = "MIT (taming-transformers)"
_MASKGIT = "MIT (MaskGIT-pytorch, valeoai); trained on ImageNet"
_AMUSED = "OpenRAIL++ (aMUSEd; use restrictions apply)"
_OPENAI = "MIT (OpenAI CLIP)"
_OPENCLIP = "MIT (OpenCLIP)"
_COMMUNITY = "unknown (community fine-tune on WikiArt)"
_IMAGENET_1024 = "8088892a516d4e3baf92"
_IMAGENET_16384 = "a7530b09fed84f80a887"
_GUMBEL_8192 = "2e5662443a6b4307b470"
_SFLCKR = "73487ab6e5314cb5adba"
_CKPT = "%2Fckpts%2Flast.ckpt"
_YAML = "%2Fconfigs%2Fmodel.yaml"
_KOOFR_LINK = "https://app.koofr.net/links/a04deec9-0c59-4673-8b37-3d696fe63a5d"
_BATBOT = "http://batbot.tv/ai/models/vqgan/WikiArt_augmented_Steps_7mil_finetuned_1mil"
_BATBOT_NOTE = (
    "batbot.tv: a personal site over plain http, named as a wikiart mirror in nerdyrodent's "
    "download_models.sh; it serves this checkpoint (WikiArt augmented, 7M steps + 1M fine-tune), "
    "not the WikiArt 1024 model it was listed for; not checked from here"
)
_PYTTI_SOURCES = "pytti-core's Somnai manifest and PyTTI Portable's pxlpshr table"


# Host order: where the hash is pinned, the Hub mirror at a fixed commit comes first (fast, a
# CDN, and the pinned hash proves it serves the same bytes as the original); where it is not,
# the original host comes first, so the hash recorded on first use is the original's.
def _maskgit(name: str, filename: str, size_bytes: int, pixels: int) -> WeightSpec:
    """MaskGIT's class-conditional masked transformer (valeoai's PyTorch reproduction, arXiv
    2202.04200) on vqgan_imagenet_f16_1024's codes; one .pth on the Hub."""
    host = hosts.hf(hosts.MASKGIT_REPO, filename, "main", hosts.MASKGIT)
    ckpt = FileSpec(
        "checkpoint", filename, hosts=(host,), size_bytes=size_bytes, sha256_note=_NO_HASH_HF
    )
    return WeightSpec(
        name,
        "prior",
        (ckpt,),
        _MASKGIT,
        f"MaskGIT's masked token prior for ImageNet's 1000 classes, {pixels} px "
        f"({pixels // 16}x{pixels // 16} tokens of vqgan_imagenet_f16_1024)",
        (f"maskgit_{pixels}",),  # "maskgit" and "maskgit512" are the pairs
        preset="maskgit",
    )


# aMUSEd (arXiv 2401.01808): three parts of one diffusers pipeline on the Hub, each read by
# vqclip's own code by diffusers' and transformers' names, in the fp16 variant (half the bytes;
# loaded into float32). From the Hub each file keeps its repository path in the cache's
# snapshot folder; in vqclip's own folder (files placed by hand) a model's files sit side by
# side, so the prior's two config.json need names of their own there, and the loaders take
# every file by its role rather than by its place.
_FP16_WEIGHTS = "diffusion_pytorch_model.fp16.safetensors"
_NO_HASH_AMUSED = (
    "one source, the authors' repository (its LFS pointer), so no sha256 is pinned; the hash of "
    "the first download is recorded (trust on first use)"
)


def _amused_notice(repo: str) -> str:
    return (
        f"aMUSEd's weights ({repo}) are licensed under OpenRAIL++, whose use restrictions bind "
        f"whoever uses them: read https://huggingface.co/{repo} before you do."
    )


def _amused_file(repo: str, role: str, filename: str, path: str, size_bytes: int) -> FileSpec:
    host = hosts.hf(repo, path, "main", hosts.AMUSED)
    return FileSpec(
        role, filename, hosts=(host,), size_bytes=size_bytes, sha256_note=_NO_HASH_AMUSED
    )


def _amused_vq(pixels: int) -> WeightSpec:
    """aMUSEd's VQ model (diffusers' VQModel in `vqvae/`): taming's layout without attention,
    f16, 8192 codes, read as a VQGAN."""
    repo = f"amused/amused-{pixels}"
    files = (
        _amused_file(repo, "config", "config.json", "vqvae/config.json", 804),
        _amused_file(repo, "checkpoint", _FP16_WEIGHTS, f"vqvae/{_FP16_WEIGHTS}", 293_000_000),
    )
    return WeightSpec(
        f"amused_vq_{pixels}",
        "vqgan",
        files,
        _AMUSED,
        f"aMUSEd's VQ model ({repo}): f16, 8192 codes, no attention",
        (f"{repo}/vqvae",),
        preset="amused",
        notice=_amused_notice(repo),
    )


def _amused_prior(pixels: int, transformer_bytes: int, config_bytes: int) -> WeightSpec:
    """aMUSEd's text-conditional masked transformer (diffusers' UVit2DModel in `transformer/`),
    its scheduler's config (which names the mask token), its text encoder (CLIP ViT-L/14's
    text tower, transformers' CLIPTextModelWithProjection in `text_encoder/`) and its
    tokenizer's special tokens (which name the pad token)."""
    repo = f"amused/amused-{pixels}"
    files = (
        _amused_file(repo, "config", "config.json", "transformer/config.json", config_bytes),
        _amused_file(
            repo, "checkpoint", _FP16_WEIGHTS, f"transformer/{_FP16_WEIGHTS}", transformer_bytes
        ),
        _amused_file(
            repo, "scheduler", "scheduler_config.json", "scheduler/scheduler_config.json", 135
        ),
        _amused_file(
            repo, "text_encoder_config", "text_encoder_config.json", "text_encoder/config.json", 574
        ),
        _amused_file(
            repo,
            "text_encoder",
            "model.fp16.safetensors",  # transformers' name for a model's fp16 variant
            "text_encoder/model.fp16.safetensors",
            247_300_000,
        ),
        # its tokenizer's pad token (the text is padded to 77 with it)
        _amused_file(
            repo,
            "tokenizer",
            "special_tokens_map.json",
            "tokenizer/special_tokens_map.json",
            460,
        ),
    )
    tokens = pixels // 16
    return WeightSpec(
        f"amused_{pixels}",
        "prior",
        files,
        _AMUSED,
        f"aMUSEd's text-conditional masked token prior, {pixels} px ({tokens}x{tokens} tokens of "
        f"amused_vq_{pixels}), with its CLIP ViT-L/14 text encoder",
        (repo,),  # "amused" and "amused512" are the pairs
        preset="amused",
        notice=_amused_notice(repo),
    )


_SPECS = (
    _vqgan(
        "vqgan_imagenet_f16_1024", "vqgan_imagenet_f16_1024",
        ckpt_hosts=(
            hosts.direct(_heibox(_IMAGENET_1024, _CKPT), hosts.HEIBOX),
            hosts.hf(hosts.MASKGIT_REPO, "pretrained_maskgit/VQGAN/last.ckpt", "main",
                hosts.MASKGIT),
            hosts.hf("Nehc/vqgan_imagenet_f16_1024", "ckpts/last.ckpt",
                "a33b7978ed3ba9d9ccce7eb90e44c435bfe26865", hosts.NEHC),
        ),
        yaml_hosts=(
            hosts.direct(_heibox(_IMAGENET_1024, _YAML), hosts.HEIBOX),
            hosts.hf("Nehc/vqgan_imagenet_f16_1024", "configs/model.yaml",
                "a33b7978ed3ba9d9ccce7eb90e44c435bfe26865", hosts.NEHC),
        ),
        ckpt_sha256="e38a3aed8c86e8d47436f611325b3a23888cab70a0cc56c13cd84e8d4aab6e71",
        sha256_note=hosts.pinned(
            "the checkpoint: the Hub's LFS sha256 of MaskGIT-pytorch's copy of it (its "
            "tokenizer) and a public download script that checks taming's heibox file against "
            "the same value; the YAML: no second source, so its first download's hash is "
            "recorded"
        ),
        size_bytes=958_000_000, licence=_TAMING,
        description="VQGAN ImageNet f16, 1024 codes (Crowson's notebook default; MaskGIT's "
        "tokenizer)",
        aliases=("imagenet_1024", "imagenet_f16_1024"),
    ),
    _vqgan(
        "vqgan_imagenet_f16_16384", "vqgan_imagenet_f16_16384",
        ckpt_hosts=(
            hosts.somnai("imagenet", "ckpt"),
            hosts.direct(_heibox(_IMAGENET_16384, _CKPT), hosts.HEIBOX),
            hosts.direct("https://heibox.uni-heidelberg.de/f/867b05fc8c4841768640/?dl=1",
                         hosts.HEIBOX_DIRECT),
            hosts.pxlpshr("imagenet", "ckpt"),
        ),
        yaml_hosts=(
            hosts.somnai("imagenet", "yaml"),
            hosts.direct(_heibox(_IMAGENET_16384, _YAML), hosts.HEIBOX),
            hosts.direct("https://heibox.uni-heidelberg.de/f/274fb24ed38341bfa753/?dl=1",
                         hosts.HEIBOX_DIRECT),
            hosts.pxlpshr("imagenet", "yaml"),
        ),
        ckpt_sha256="845a68805098cb666420d5db93df53f3a3b6dd443e6dd85c05759c5b998cd663",
        yaml_sha256="00e2c6189926f1d89ecfef73e9598db77981c1982f0555fbade963ffd16143c7",
        sha256_note=hosts.pinned(
            _PYTTI_SOURCES + ", and two projects that hash the heibox download (980092370 bytes)"
        ),
        size_bytes=980_092_370, yaml_size_bytes=692, licence=_TAMING,
        description="VQGAN ImageNet f16, 16384 codes (nerdyrodent's default)",
        aliases=("imagenet_16384", "imagenet_f16_16384"),
    ),
    _vqgan(
        "vqgan_gumbel_f8_8192", "vqgan_gumbel_f8_8192",
        ckpt_hosts=(
            hosts.hf("neggles/vaedump", "taming/vq-gumbel-f8-8192/model.ckpt",
                "115a6c7eb8a93cf3114544421f1dbe1b725a99e7", hosts.NEGGLES),
            hosts.somnai("openimages", "ckpt"),
            hosts.direct(_heibox(_GUMBEL_8192, _CKPT), hosts.HEIBOX),
        ),
        yaml_hosts=(
            hosts.hf("neggles/vaedump", "taming/vq-gumbel-f8-8192/config.yaml",
                "115a6c7eb8a93cf3114544421f1dbe1b725a99e7", hosts.NEGGLES),
            hosts.somnai("openimages", "yaml"),
            hosts.direct(_heibox(_GUMBEL_8192, _YAML), hosts.HEIBOX),
        ),
        ckpt_sha256="5cd6c74810ab97e00e942c25403f73afc081e8b19987b31ec0d9ff5b68e7ab14",
        yaml_sha256="91110bab325067b37f85d1e75895a837d59c292bae4f3097f80c518714d5caff",
        sha256_note=hosts.pinned(
            "neggles/vaedump's LFS pointer, " + _PYTTI_SOURCES + ", and an unrelated project's "
            "audit of taming's last.ckpt (376581823 bytes)"
        ),
        size_bytes=376_581_823, yaml_size_bytes=745, licence=_TAMING,
        description="Gumbel VQGAN OpenImages f8, 8192 codes",
        aliases=("gumbel_8192", "vqgan_openimages_f8_8192", "openimages_f8_8192"),
    ),
    # Both original hosts are gone: eaidata.bmk.sh, and mirror.io.community (has not resolved
    # since August 2021: nerdyrodent/VQGAN-CLIP#37, googlecolab/colabtools#2206).
    _vqgan(
        "vqgan_wikiart_f16_16384", "wikiart_16384",
        ckpt_hosts=(hosts.somnai("wikiart", "ckpt"), hosts.pxlpshr("wikiart", "ckpt")),
        yaml_hosts=(hosts.somnai("wikiart", "yaml"), hosts.pxlpshr("wikiart", "yaml")),
        ckpt_sha256="bd08bb46301f98be1712bb2be9f8868cea30b53137cd985d4d6e8da8b3e02c36",
        yaml_sha256="6e78241d2828ff35b8381839ce249c24a6c468ed429760d33a25e98e7f24499a",
        sha256_note=hosts.pinned(_PYTTI_SOURCES),
        size_bytes=1_005_327_541, yaml_size_bytes=920,
        licence=_COMMUNITY,
        description="VQGAN f16, 16384 codes, trained on WikiArt paintings (EleutherAI's run)",
        aliases=("wikiart_16384", "wikiart"),
    ),
    # The WikiArt 1024 model's only host was mirror.io.community; batbot.tv, listed as its
    # mirror, serves this different checkpoint, so it is a model of its own.
    _vqgan(
        "vqgan_wikiart_7mil", "wikiart_7mil",
        ckpt_hosts=(hosts.direct(f"{_BATBOT}.ckpt", _BATBOT_NOTE),),
        yaml_hosts=(hosts.direct(f"{_BATBOT}.yaml", _BATBOT_NOTE),),
        size_bytes=None,
        licence=_COMMUNITY,
        description="VQGAN fine-tuned on augmented WikiArt (7M steps + 1M), batbot.tv's",
        aliases=("wikiart_7mil", "wikiart_augmented"),
    ),
    # The COCO-Stuff first stage alone (296 MB): the VQGAN is all VQGAN+CLIP uses, and the
    # 8.4 GB transformer checkpoint (dl.nmkd.de) holds the same first stage.
    _vqgan(
        "vqgan_coco", "coco_first_stage",
        ckpt_hosts=(
            hosts.somnai("coco", "ckpt"),
            hosts.pxlpshr("coco_first_stage", "ckpt"),
            hosts.direct("http://batbot.ai/models/VQGAN/coco_first_stage.ckpt",
                    "batbot.ai: pytti-core's source for this file before 2026; plain http; not "
                    "checked from here"),
        ),
        yaml_hosts=(
            hosts.somnai("coco", "yaml"),
            hosts.pxlpshr("coco_first_stage", "yaml"),
            hosts.direct("http://batbot.ai/models/VQGAN/coco_first_stage.yaml",
                    "batbot.ai: pytti-core's source for this file before 2026; plain http; not "
                    "checked from here"),
        ),
        ckpt_sha256="106cc20fde571df14afc4349d62218d8213cf47177c682ecaa78a8c28b12f9de",
        yaml_sha256="17d0c2d9fda59eccade2a6070d833804b759dc817da42c2268be8cf1eb047676",
        sha256_note=hosts.pinned(_PYTTI_SOURCES),
        size_bytes=296_030_214, yaml_size_bytes=458, licence=_TAMING,
        description="taming COCO-Stuff first stage VQGAN (f16)",
        aliases=("coco",),
    ),
    _vqgan(
        "vqgan_faceshq", "faceshq",
        ckpt_hosts=(
            hosts.direct(
                "https://app.koofr.net/content/links/a04deec9-0c59-4673-8b37-3d696fe63a5d/files/"
                "get/last.ckpt?path=%2F2020-11-13T21-41-45_faceshq_transformer%2Fcheckpoints%2F"
                "last.ckpt",
                "app.koofr.net: taming's own link; answers 400 to a request without a Referer "
                "(hotlink protection, taming-transformers#196), so the share page is sent",
                referer=_KOOFR_LINK,
            ),
            hosts.somnai("faceshq", "ckpt"),
        ),
        yaml_hosts=(
            hosts.direct(
                "https://drive.google.com/uc?export=download&id=1fHwGx_hnBtC8nsq7hesJvs-Klv-P0gzT",
                "Google Drive link from nerdyrodent's and pytti-core's scripts; its confirm page "
                "is followed",
            ),
            hosts.somnai("faceshq", "yaml"),
        ),
        sha256_note="only pytti-core's Somnai manifest publishes a sha256 (one source); "
        "the hash of the first download is recorded (trust on first use)",
        size_bytes=None, licence=_TAMING,
        description="taming FacesHQ transformer; its first stage is the VQGAN",
        aliases=("faceshq",),
    ),
    _vqgan(
        "vqgan_sflckr", "sflckr",
        ckpt_hosts=(
            hosts.somnai("sflickr", "ckpt"),
            hosts.direct(_heibox(_SFLCKR, "%2Fcheckpoints%2Flast.ckpt"), hosts.HEIBOX),
            hosts.pxlpshr("sflckr", "ckpt"),
        ),
        yaml_hosts=(
            hosts.somnai("sflickr", "yaml"),
            hosts.direct(_heibox(_SFLCKR, "%2Fconfigs%2F2020-11-09T13-31-51-project.yaml"),
                         hosts.HEIBOX),
            hosts.pxlpshr("sflckr", "yaml"),
        ),
        ckpt_sha256="8a8adea3da8dab412675772831370dd948e0aa97bb11a9488a2f328b58dbc929",
        yaml_sha256="c27f012996f3f1f02580f063be47fd60bdd8528efb04d7318b2cbe8a86505b1b",
        sha256_note=hosts.pinned(_PYTTI_SOURCES),
        size_bytes=4_263_525_412, yaml_size_bytes=1_603, licence=_TAMING,
        description="taming S-FLCKR landscape transformer; its first stage is the VQGAN",
        aliases=("sflckr", "s_flckr", "sflickr"),
    ),
    # A taming checkpoint of its own: the ImageNet 16384 model fine-tuned by Boris Dayma on
    # CC3M + YFCC100M for people and faces (DALL-E mini's VQGAN), per its model card.
    _vqgan(
        "vqgan_f16_16384_dalle_mini", "vqgan_f16_16384_dalle_mini",
        ckpt_hosts=(
            hosts.hf("boris/vqgan_f16_16384", "model.ckpt",
                "946c5d2f88276c3796bda51babbb4b9626f3d554",
                "boris/vqgan_f16_16384 on the Hub: model.ckpt and config.yaml added in commit "
                "946c5d2 ('feat: add model'); later commits only edit the README"),
        ),
        yaml_hosts=(
            hosts.hf("boris/vqgan_f16_16384", "config.yaml",
                "946c5d2f88276c3796bda51babbb4b9626f3d554",
                "boris/vqgan_f16_16384 on the Hub, commit 946c5d2"),
        ),
        sha256_note="no sha256 published beside the Hub's own LFS pointer (one source); the "
        "hash of the first download is recorded (trust on first use)",
        size_bytes=None,
        licence="unknown (no licence on the model card; a fine-tune of taming's MIT model)",
        description="VQGAN f16 16384 fine-tuned on CC3M + YFCC100M for people and faces "
        "(DALL-E mini's)",
        aliases=("boris/vqgan_f16_16384", "dalle_mini_vqgan", "vqgan_f16_16384_cc3m"),
    ),
    _clip(
        "clip_vit_b32_openai", "ViT-B-32",
        "timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors",
        licence=_OPENAI, quick_gelu=True, input_size=224, size_bytes=605_000_000,
        description="OpenAI CLIP ViT-B/32 (the usual VQGAN+CLIP default)",
        aliases=("ViT-B/32", "ViT-B-32/openai"),
        openai_pt_sha256="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
    ),
    _clip(
        "clip_vit_b16_openai", "ViT-B-16",
        "timm/vit_base_patch16_clip_224.openai", "open_clip_model.safetensors",
        licence=_OPENAI, quick_gelu=True, input_size=224, size_bytes=599_000_000,
        description="OpenAI CLIP ViT-B/16",
        aliases=("ViT-B/16", "ViT-B-16/openai"),
        openai_pt_sha256="5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
    ),
    _clip(
        "clip_vit_l14_openai", "ViT-L-14",
        "timm/vit_large_patch14_clip_224.openai", "open_clip_model.safetensors",
        licence=_OPENAI, quick_gelu=True, input_size=224, size_bytes=1_710_000_000,
        description="OpenAI CLIP ViT-L/14",
        aliases=("ViT-L/14", "ViT-L-14/openai"),
        openai_pt_sha256="b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
    ),
    _clip(
        "clip_vit_l14_336_openai", "ViT-L-14-336",
        "timm/vit_large_patch14_clip_336.openai", "open_clip_model.safetensors",
        licence=_OPENAI, quick_gelu=True, input_size=336, size_bytes=1_710_000_000,
        description="OpenAI CLIP ViT-L/14 at 336 px",
        aliases=("ViT-L/14@336px", "ViT-L-14-336", "ViT-L-14-336/openai"),
        openai_pt_sha256="3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
    ),
    _clip(
        "clip_vit_b32_laion2b", "ViT-B-32",
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "open_clip_model.safetensors",
        licence=_OPENCLIP, quick_gelu=False, input_size=224, size_bytes=605_000_000,
        description="OpenCLIP ViT-B/32 trained on LAION-2B (laion2b_s34b_b79k)",
        aliases=("ViT-B-32/laion2b_s34b_b79k", "laion2b_s34b_b79k"),
    ),
    # open_clip lists INCEPTION mean/std (0.5) for this one checkpoint, not OpenAI's; and its
    # repo names the safetensors copy open_clip_pytorch_model.safetensors.
    _clip(
        "clip_vit_l14_laion2b", "ViT-L-14",
        "laion/CLIP-ViT-L-14-laion2B-s32B-b82K", "open_clip_pytorch_model.safetensors",
        licence=_OPENCLIP, quick_gelu=False, input_size=224, size_bytes=1_710_000_000,
        description="OpenCLIP ViT-L/14 trained on LAION-2B (laion2b_s32b_b82k)",
        aliases=("ViT-L-14/laion2b_s32b_b82k", "laion2b_s32b_b82k"),
        mean=INCEPTION_MEAN, std=INCEPTION_STD,
    ),
    _maskgit("maskgit_imagenet_256", "MaskGIT_ImageNet_256.pth", 2_090_306_069, 256),
    _maskgit("maskgit_imagenet_512", "MaskGIT_ImageNet_512.pth", 2_116_055_573, 512),
    _amused_vq(256),
    _amused_vq(512),
    _amused_prior(256, 1_207_100_000, 646),
    _amused_prior(512, 1_216_570_696, 676),
)  # fmt: skip


def normalize_name(name: str) -> str:
    """Fold case and separators so "ViT-B/32", "vit_b_32" and "VIT-B-32" are the same key."""
    return re.sub(r"[\s\-_/@.:]+", "_", name.strip().lower()).strip("_")


def _index(specs: tuple[WeightSpec, ...]) -> dict[str, WeightSpec]:
    index: dict[str, WeightSpec] = {}
    for spec in specs:
        for key in (spec.name, *spec.aliases):
            k = normalize_name(key)
            if k in index:
                raise ConfigError(
                    f"registry key {key!r} is used twice ({index[k].name}, {spec.name})"
                )
            index[k] = spec
    return index


REGISTRY: MappingProxyType[str, WeightSpec] = MappingProxyType({s.name: s for s in _SPECS})
_BY_KEY = _index(_SPECS)


def find_spec(name: str) -> WeightSpec | None:
    """The spec registered under `name` or one of its aliases (case and separators ignored)."""
    return _BY_KEY.get(normalize_name(name))


def suggest(name: str, n: int = 3) -> list[str]:
    """Names of the registry models whose name or an alias looks like `name`, best first."""
    close = difflib.get_close_matches(normalize_name(name), list(_BY_KEY), n=4 * n, cutoff=0.5)
    return list(dict.fromkeys(_BY_KEY[c].name for c in close))[:n]


def get_spec(name: str, kind: str | None = None) -> WeightSpec:
    """Look `name` up; ConfigError with close matches if it is unknown, or if of another kind."""
    spec = find_spec(name)
    if spec is None:
        close = suggest(name)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"unknown model {name!r}.{hint} Run `vqclip models list` to see the known models, "
            "or pass the path of a checkpoint file."
        )
    if kind is not None and spec.kind != kind:
        raise ConfigError(f"{name!r} is a {spec.kind.upper()} model, not a {kind.upper()} one")
    return spec


def list_specs(kind: str | None = None) -> list[WeightSpec]:
    return [s for s in _SPECS if kind is None or s.kind == kind]


# Model pairs: one name for a VQGAN + CLIP combination (`vqclip generate --model NAME`), with
# the settings that suit it where they differ from the general defaults.


@dataclass(frozen=True)
class ModelPair:
    vqgan: str  # registry name or path
    clips: tuple[str, ...]
    defaults: tuple[tuple[str, object], ...] = ()  # (GenerateConfig field, value) pairs


# Weights shipped inside the package (the toy pair, `vqclip.toy`), known by name rather than by
# path, so settings that name them still work after the package moves.
PACKAGED_DIR = Path(__file__).resolve().parent.parent / "toy" / "weights"
PACKAGED = {
    "toy_vqgan": "toy_vqgan.safetensors",
    "toy_clip_a": "toy_clip_a.safetensors",
    "toy_clip_b": "toy_clip_b.safetensors",
    # token priors trained on the toy VQGAN's codes
    "toy_prior": "toy_prior.safetensors",
    "toy_masked_prior": "toy_masked_prior.safetensors",
    "toy_shape_prior": "toy_shape_prior.safetensors",  # toy_masked_prior told the shape
}


def _redraw_defaults(prior: str, size: int) -> tuple[tuple[str, object], ...]:
    """A large masked prior in the loop as the toy pair's is: redraws of the least likely half
    every 125 steps and once after the last, steered by the guides, the best of 4 kept."""
    return (
        ("size", (size, size)),
        ("cut_method", "overview"),
        ("prior", prior),
        ("prior_weight", 0.0),
        ("prior_resample_every", 125),
        ("prior_final_passes", 1),
        ("prior_resample_fraction", 0.5),
        ("prior_guidance", 1.0),
        ("prior_candidates", 4),
    )


def _maskgit_defaults(
    prior: str, size: int, *, steps: int, gumbel: float, guidance: float
) -> tuple[tuple[str, object], ...]:
    return (
        *_redraw_defaults(prior, size),
        ("prior_sampler", "maskgit"),
        ("prior_draw_steps", steps),
        ("prior_gumbel_temperature", gumbel),
        ("prior_class_guidance", 1 + guidance),
    )


_AMUSED_DRAWS = (
    ("prior_sampler", "vqclip"),
    ("prior_draw_steps", 12),
    ("prior_class_guidance", 10.0),
)

PAIRS: dict[str, ModelPair] = {
    "default": ModelPair("vqgan_imagenet_f16_16384", ("clip_vit_b32_openai",)),
    "imagenet1024": ModelPair("vqgan_imagenet_f16_1024", ("clip_vit_b32_openai",)),
    "gumbel": ModelPair("vqgan_gumbel_f8_8192", ("clip_vit_b32_openai",)),
    "wikiart": ModelPair("vqgan_wikiart_f16_16384", ("clip_vit_b32_openai",)),
    "ensemble": ModelPair(
        "vqgan_imagenet_f16_16384", ("clip_vit_b32_openai", "clip_vit_b16_openai")
    ),
    # MaskGIT's class-conditional masked prior on its VQGAN, in the loop as the toy pair's prior
    # is (redraws of the least likely half, the guides steering the draws and keeping the best
    # of 4), drawn by MaskGIT's own rule with its rounds, Gumbel noise and class guidance (3,
    # as (1 + w) c - w u: S = 1 + w) at each size; the class comes from the prompt (CLIP).
    "maskgit": ModelPair(
        "vqgan_imagenet_f16_1024",
        ("clip_vit_b32_openai",),
        _maskgit_defaults("maskgit_imagenet_256", 256, steps=8, gumbel=4.5, guidance=3.0),
    ),
    "maskgit512": ModelPair(
        "vqgan_imagenet_f16_1024",
        ("clip_vit_b32_openai",),
        _maskgit_defaults("maskgit_imagenet_512", 512, steps=15, gumbel=7.0, guidance=2.8),
    ),
    # aMUSEd's text-conditional prior on its own VQ model, conditioned on the prompt's positive
    # text, in the loop as MaskGIT's is, with aMUSEd's 12 rounds and its guidance scale 10 as
    # the class guidance (its one "class" is the prompt's text, against the empty prompt).
    # The draws keep vqclip's rule (a random order on a cosine schedule, steered by the
    # guides), which the toy world chose: aMUSEd's own rule (issue 43's item 3: the most
    # confident first, Gumbel noise falling 2 -> 0, its cosine schedule) is
    # `--prior-sampler amused`, not yet compared with it on real weights.
    "amused": ModelPair(
        "amused_vq_256",
        ("clip_vit_b32_openai",),
        (*_redraw_defaults("amused_256", 256), *_AMUSED_DRAWS),
    ),
    "amused512": ModelPair(
        "amused_vq_512",
        ("clip_vit_b32_openai",),
        (*_redraw_defaults("amused_512", 512), *_AMUSED_DRAWS),
    ),
    # The offline pair trained on the toy world, shipped in the package. Its loop ends with the
    # late clean-up by the masked token prior told each image's shape (from its prompt), which
    # beats the plain loop and the untold masked prior on the toy eval (docs/toy.md);
    # `--prior none` gives the plain loop.
    "toy": ModelPair(
        "toy_vqgan",
        ("toy_clip_a", "toy_clip_b"),
        (
            ("size", (64, 64)),
            ("iterations", 200),
            ("cut_method", "overview"),
            ("cutn", 16),
            ("prior", "toy_shape_prior"),
            ("prior_weight", 0.0),
            ("prior_resample_every", 50),
            ("prior_final_passes", 1),
            ("prior_resample_fraction", 0.5),
            ("prior_guidance", 1.0),
            ("prior_draw_steps", 32),
            ("prior_candidates", 4),
        ),
    ),
}


def resolve_pair(name: str) -> ModelPair:
    """The model pair called `name`; ConfigError listing the pairs if unknown."""
    if name in PAIRS:
        return PAIRS[name]
    close = difflib.get_close_matches(name, list(PAIRS), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown model pair {name!r}; pairs: {', '.join(PAIRS)}.{hint}")


def pair_model_names(pair: ModelPair) -> list[str]:
    """The models a pair names: its VQGAN, CLIPs and the prior its defaults use."""
    prior = dict(pair.defaults).get("prior")
    return [pair.vqgan, *pair.clips, *([prior] if isinstance(prior, str) else [])]


def specs_named(name: str) -> list[WeightSpec]:
    """The registry models `name` stands for: a model, or every registry model of a pair (its
    packaged ones need no download)."""
    if name in PAIRS:
        found = [find_spec(n) for n in pair_model_names(PAIRS[name])]
        return list(dict.fromkeys(s for s in found if s is not None))
    return [get_spec(name)]
