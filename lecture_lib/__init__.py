"""lecture_lib: a small from-scratch PyTorch library for the CS336 Lecture 10 (Inference) notebooks.

The readable core is flat (``config``, ``model``, ``cache_protocol``, ``analysis``, ``devices``,
``hardware``, ``hf``, ``gqa``, ...); beside it, one subpackage per concern, imports running one way:
core <- ``quant`` <- ``cache`` <- ``decode`` <- ``measure``. See the README's module table.
"""
from .cache import KVCache
from .config import ModelConfig, get_config, preset_names
from .model import Transformer

__all__ = ["ModelConfig", "get_config", "preset_names", "KVCache", "Transformer"]
__version__ = "0.1.0"
