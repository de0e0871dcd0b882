"""Quantization, from number formats to int8/int4 weight-only layers (notebook 06, and the int8
rung of notebook 07).

What lives here:
- ``formats``: fp32, bf16, fp16, fp8 (e4m3fn max 448; e4m3fnuz max 240, the lecture's figure),
  int8, int4, from ``torch.finfo``/``iinfo``; fp8 rounding.
- ``schemes``: the lecture's quantize/dequantize, absmax and zero-point at per-tensor,
  per-channel and per-group granularity, the scale/2 error bound.
- ``linear``: ``Int8Linear``, ``Int4Linear``, and swapping them into a model.
- ``outliers``: LLM.int8()'s outlier channels and mixed decomposition; capturing layer inputs.
- ``int8_gemv``: the Triton int8 matrix-vector kernel ``Int8Linear`` uses for decode on CUDA.
- ``variants``: the named variants notebook 06 compares ("int8 per channel", "int4 groups of 64").

What does not: the int8 KV cache is a cache (``lecture_lib.cache.Int8KVCache``, built on
``schemes``); perplexity and KL of a quantized model are measurements (``lecture_lib.measure.quality``).
Everything here needs only torch (and Triton for the kernel), never the model or a cache.
"""
from .formats import fake_quantize_float8, float8_values, format_table
from .linear import (Int4Linear, Int8Linear, group_size_for, linear_layers, pack_int4, quantize_int4_,
                     quantize_int4_per_channel_, quantize_model_, replace_linears_,
                     tinygemm_unsupported_reason, unpack_int4, use_cpu_kernels_, cpu_int4_unsupported_reason,
                     weight_bytes)
from .outliers import capture_inputs, int8_matmul, llm_int8_matmul, outlier_channels
from .schemes import (dequantize, dequantize_absmax, dequantize_zeropoint, error_bound, fake_quantize,
                      quantize, quantize_absmax, quantize_zeropoint, relative_error)
from .variants import VARIANTS, layer_kinds, quantize_variant_, quantized_copy

__all__ = [
    "format_table", "float8_values", "fake_quantize_float8",
    "quantize", "dequantize",
    "quantize_absmax", "dequantize_absmax", "quantize_zeropoint", "dequantize_zeropoint",
    "fake_quantize", "error_bound", "relative_error",
    "Int8Linear", "Int4Linear", "pack_int4", "unpack_int4", "tinygemm_unsupported_reason",
    "use_cpu_kernels_", "cpu_int4_unsupported_reason",
    "quantize_model_", "quantize_int4_", "quantize_int4_per_channel_", "group_size_for",
    "linear_layers", "replace_linears_", "weight_bytes",
    "outlier_channels", "int8_matmul", "llm_int8_matmul", "capture_inputs",
    "VARIANTS", "quantize_variant_", "quantized_copy", "layer_kinds",
]
