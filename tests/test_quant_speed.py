import pytest
import torch

from lecture_lib import ModelConfig, Transformer, quant
from lecture_lib.measure.quant_speed import linear_seconds, measure_variants, speed_shape


def tiny():
    return ModelConfig(L=2, D=64, N=4, K=2, H=16, F=128, V=97, S_max=128)


def test_variants_quantize_as_named_and_leave_the_original_alone():
    torch.manual_seed(0)
    model = Transformer(tiny()).eval()
    kinds = {v: quant.layer_kinds(quant.quantized_copy(model, v)) for v in quant.VARIANTS}
    assert kinds["unquantized"] == "nn.Linear" and quant.layer_kinds(model) == "nn.Linear"
    assert kinds["int8 per channel"] == "Int8Linear"
    assert kinds["int4 per channel"] == kinds["int4 groups of 32"] == "Int4Linear[torch]"  # on a CPU
    per_channel = quant.quantized_copy(model, "int4 per channel")
    assert per_channel.layers[0].mlp.w_down.group_size == 128  # one group = the whole input row
    assert isinstance(quant.quantized_copy(model, "int8 per channel").lm_head, torch.nn.Linear)  # kept
    with pytest.raises(ValueError, match="Unknown variant"):
        quant.quantize_variant_(model, "int3")


def test_measure_variants_records_bytes_and_times_on_cpu():
    torch.manual_seed(0)
    rows = measure_variants(lambda: Transformer(tiny()).eval(), ["unquantized", "int8 per channel", "int4 groups of 32"],
                            cases=((1, 1), (2, 4)), S=16, repeats=2)
    by = {r["variant"]: r for r in rows}
    assert by["unquantized"]["bits_per_weight"] == 32
    # int8: 8 bits a weight plus one fp32 scale per output row; int4 groups of 32 repacked for the
    # CPU kernel: 4 bits plus a bf16 scale and a bf16 zero per 32 weights
    assert 8 < by["int8 per channel"]["bits_per_weight"] < 9
    assert by["int4 groups of 32"]["bits_per_weight"] == pytest.approx(4 + 32 / 32)
    assert by["int8 per channel"]["layers"] == "Int8Linear[cpu]"  # switched to PyTorch's CPU kernel
    for r in rows:
        assert set(r["step"]) == {(1, 1), (2, 4)} and all(t > 0 for t in r["step"].values()) and r["linear"] > 0
    assert by["int8 per channel"]["bytes"] < by["unquantized"]["bytes"]


def test_linear_seconds_and_speed_shape_on_cpu():
    assert linear_seconds(Transformer(tiny()).eval(), B=1, repeats=2) > 0
    assert speed_shape("cpu")[0] is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_int8_decode_step_is_faster_on_cuda_at_a_memory_bound_shape():
    from lecture_lib import get_config
    from lecture_lib.measure.bench import build_model
    cfg = get_config("llama3.2-1b-like")
    dtype = torch.bfloat16 if torch.cuda.get_device_capability() >= (8, 0) else torch.float16
    rows = measure_variants(lambda: build_model(cfg, "cuda", dtype), ["unquantized", "int8 per channel"])
    assert rows[1]["linear"] < rows[0]["linear"] / 1.3  # half the bytes through the Triton kernel
