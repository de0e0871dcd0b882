"""lecture_lib: a small from-scratch PyTorch library for the CS336 Lecture 10 (Inference) notebooks."""
from .config import ModelConfig, get_config, preset_names
from .kv_cache import KVCache
from .model import Transformer

__all__ = ["ModelConfig", "get_config", "preset_names", "KVCache", "Transformer"]
__version__ = "0.1.0"
