"""What is known of the hosts that serve the registry's files, and helpers that build them.

Each note says what the host is and where that was learned. The registry was written without
network access, so a host nobody could check from here says so; `vqclip models check` asks them.
"""

from __future__ import annotations

from vqclip.weights.spec import Host

HEIBOX = (
    "heibox.uni-heidelberg.de: taming-transformers' own Seafile share (the links in taming's "
    "README); reported slow and throttled (taming-transformers#53, pytti-core#131)"
)
HEIBOX_DIRECT = "heibox direct file link from nerdyrodent's download_models.sh; " + HEIBOX
SOMNAI_REPO = "Somnai/pytti-vqgan-checkpoints"
SOMNAI_REV = "debc22c8f285c7734980c464ff992d335dde6e9a"
SOMNAI = (
    "Hub mirror made by pytti-core's maintainers in 2026 from the original hosts, 'sha256-"
    "verified against its provenance'; repo, commit and per-file sha256 from pytti-core's "
    "vqgan loader (its manifest.json)"
)
PXLPSHR_REPO = "pxlpshr/pytti-models"
PXLPSHR = (
    "Hub mirror of PyTTI Portable; paths, sizes and sha256 from its model_mirror.py; fetched "
    "at branch main (no commit published)"
)
NEGGLES = (
    "neggles/vaedump on the Hub: the commit page shows the LFS pointer (sha256 5cd6c748..., "
    "376581823 bytes) and the taming GumbelVQ config"
)
NEHC = (
    "Nehc/vqgan_imagenet_f16_1024 on the Hub: taming's last.ckpt (958 MB, as heibox's) and "
    "model.yaml (645 B); no hash published, so not known to be byte-identical to heibox"
)

MASKGIT_REPO = "llvictorll/Maskgit-pytorch"
MASKGIT = (
    "llvictorll/Maskgit-pytorch on the Hub: the weights of valeoai's MaskGIT reproduction "
    "(code: github.com/llvictorll/MaskGIT-pytorch, MIT), with its tokenizer, taming's ImageNet "
    "f16 1024 VQGAN; fetched at branch main (no commit recorded here)"
)

AMUSED = (
    "the aMUSEd authors' own Hub repository (Hugging Face's open MUSE reproduction, arXiv "
    "2401.01808; OpenRAIL++), in diffusers' pipeline layout; its fp16 files; fetched at branch "
    "main (no commit recorded here)"
)


def hf(repo: str, path: str, revision: str, note: str) -> Host:
    return Host(hf_repo=repo, hf_filename=path, revision=revision, note=note)


def somnai(folder: str, ext: str) -> Host:
    return hf(SOMNAI_REPO, f"{folder}/{folder}.{ext}", SOMNAI_REV, SOMNAI)


def pxlpshr(stem: str, ext: str) -> Host:
    return hf(PXLPSHR_REPO, f"vqgan/{stem}.{ext}", "main", PXLPSHR)


def direct(url: str, note: str, referer: str | None = None) -> Host:
    return Host(url=url, note=note, referer=referer)


def pinned(sources: str) -> str:
    return f"sha256 published by two or more independent sources that agree: {sources}"
