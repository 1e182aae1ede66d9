"""CLIP (ViT image tower + text transformer), its BPE tokenizer, and weight loading."""

from vqclip.clip.config import CLIP_PRESETS, CLIPConfig, clip_config_from_state_dict, clip_preset
from vqclip.clip.io import load_clip, save_clip
from vqclip.clip.model import CLIP
from vqclip.clip.tokenizer import ClipTokenizer, default_tokenizer, tokenize

__all__ = [
    "CLIP",
    "CLIP_PRESETS",
    "CLIPConfig",
    "ClipTokenizer",
    "clip_config_from_state_dict",
    "clip_preset",
    "default_tokenizer",
    "load_clip",
    "save_clip",
    "tokenize",
]
