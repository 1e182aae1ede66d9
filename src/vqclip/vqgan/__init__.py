"""The VQGAN of taming-transformers: model, config, and checkpoint loading/saving."""

from vqclip.vqgan.config import VQGANConfig
from vqclip.vqgan.io import load_vqgan, save_taming, save_vqgan
from vqclip.vqgan.model import VQGAN

__all__ = ["VQGAN", "VQGANConfig", "load_vqgan", "save_taming", "save_vqgan"]
