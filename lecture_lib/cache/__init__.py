"""KV caches: every implementation of the protocol in ``lecture_lib.cache_protocol``.

- ``KVCache`` (``plain``): one [L B K S H] tensor each for keys and values; the readable one.
- ``StaticKVCache`` (``static``): one buffer per layer at fixed addresses, for CUDA graphs.
- ``Int8KVCache`` (``int8``): int8 keys and values with a scale per (token, head).
- ``GroupedDecodeKVCache`` (``grouped``): the plain cache, with a decode step that reads each KV
  head once for its G query heads on every attention backend (notebook 05).

Each has ``for_model(model, B, S_max)``, which reads the model's device and dtype. The protocol
itself lives in the core (``cache_protocol``), because ``model.py`` needs it and must not depend
on any implementation. What does not live here: deciding positions (the caller's job, see the
protocol), and generation (``lecture_lib.decode``).
"""
from ..cache_protocol import KVCacheProtocol
from .grouped import GroupedDecodeKVCache
from .int8 import Int8KVCache
from .plain import KVCache
from .static import StaticKVCache

__all__ = ["KVCacheProtocol", "KVCache", "StaticKVCache", "Int8KVCache", "GroupedDecodeKVCache"]
