"""Bad input is refused at the door with an error that names the problem and the fix."""
import json

import pytest
import torch

from lecture_lib import ModelConfig, Transformer, get_config
from lecture_lib.cache import KVCache
from lecture_lib.checkpoints import load_checkpoint, save_checkpoint
from lecture_lib.decode import FastGenerator, generate_cached, generate_naive
from lecture_lib.decode.sampling import sample
from lecture_lib.measure.bench import main as bench_main
from lecture_lib.measure.bench import run_decode

CFG = ModelConfig(L=1, D=32, N=4, K=2, H=8, F=64, V=50, S_max=32)


@pytest.fixture(scope="module")
def model():
    return Transformer(CFG).eval()


PATHS = {"naive": generate_naive, "cached": generate_cached,
         "fast": lambda m, p, n, **kw: FastGenerator(m, B=p.shape[0], S_max=24, fuse=False).generate(p, n, **kw)}


@pytest.mark.parametrize("path", list(PATHS))
def test_prompts_are_checked_on_every_path(model, path):
    gen = PATHS[path]
    with pytest.raises(ValueError, match="Empty input"):
        gen(model, torch.zeros(1, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, V\) = \[0, 50\), got ids from 1 to 50"):
        gen(model, torch.tensor([[1, 2, 50]]), 3)
    with pytest.raises(ValueError, match="from -1 to 2"):
        gen(model, torch.tensor([[-1, 2]]), 3)
    with pytest.raises(TypeError, match=r"integer tensor \(torch.long\), got torch.float32.*\.long\(\)"):
        gen(model, torch.zeros(1, 3), 3)
    with pytest.raises(ValueError, match="max_new_tokens must be at least 1"):
        gen(model, torch.zeros(1, 3, dtype=torch.long), 0)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), -0.5])
def test_temperature_must_be_finite_and_not_negative(model, path, temperature):
    with pytest.raises(ValueError, match="temperature must be"):
        PATHS[path](model, torch.zeros(1, 3, dtype=torch.long), 2, temperature=temperature)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("top_k", [0, -3])
def test_top_k_must_be_positive_on_every_path(model, path, top_k):
    with pytest.raises(ValueError, match=f"top_k must be a positive integer.*got {top_k}"):
        PATHS[path](model, torch.zeros(1, 3, dtype=torch.long), 2, temperature=0.7, top_k=top_k)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        sample(torch.zeros(2, 5), torch.tensor(1.0), top_k=top_k)  # a device-tensor temperature too


def test_eos_and_limits_are_checked(model):
    with pytest.raises(ValueError, match=r"eos_id must be a token id in \[0, V\) = \[0, 50\)"):
        generate_cached(model, torch.zeros(1, 3, dtype=torch.long), 2, eos_id=50)
    with pytest.raises(ValueError, match="2 limits for a batch of B = 1"):
        generate_cached(model, torch.zeros(1, 3, dtype=torch.long), [2, 3])


def test_the_model_checks_its_tokens(model):
    with pytest.raises(ValueError, match=r"\[B T\] tensor.*tokens\[None\]"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        model(torch.zeros(1, 4, dtype=torch.float16))


def test_odd_head_dim_is_refused():
    with pytest.raises(ValueError, match="H = 7 is odd.*rotate pairs.*H = 8 or 6"):
        ModelConfig(D=28, N=4, K=4, H=7)


def test_a_cache_of_another_batch_or_dtype_is_refused(model):
    prompt = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"holds B = 1 sequences.*KVCache.for_model\(model, B=2"):
        generate_cached(model, prompt, 2, cache=KVCache.for_model(model, 1, 8))
    with pytest.raises(ValueError, match="stores torch.float64 but the model computes in torch.float32"):
        generate_cached(model, prompt, 2, cache=KVCache(CFG, 2, 8, dtype=torch.float64))


def test_get_config_refuses_unknown_fields():
    with pytest.raises(TypeError, match=r"unknown fields 'k' \(did you mean 'K'\?\)"):
        get_config("llama3-8b", k=1)
    with pytest.raises(TypeError, match="'layers'"):
        get_config("tiny", layers=2)
    assert get_config("llama3-8b", K=1).K == 1


@pytest.mark.parametrize("flag", ["--batch", "--prompt", "--new", "--repeats"])
@pytest.mark.parametrize("value", ["0", "-2"])
def test_bench_refuses_sizes_below_one(flag, value, capsys):
    with pytest.raises(SystemExit) as e:
        bench_main(["decode", "--preset", "tiny", flag, value, "--device", "cpu"])
    assert e.value.code == 2 and "must be at least 1" in capsys.readouterr().err


def test_bench_refuses_a_prompt_past_the_presets_maximum(capsys):
    with pytest.raises(SystemExit) as e:
        bench_main(["decode", "--preset", "tiny", "--prompt", "250", "--new", "16", "--device", "cpu"])
    assert e.value.code == 2 and "exceed tiny's S_max = 256" in capsys.readouterr().err
    with pytest.raises(ValueError, match="S_max = 256"):
        run_decode(get_config("tiny"), prompt_len=250, new=16, device="cpu", rungs=())


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "notes.safetensors"
    bad.write_text("these are not weights")
    with pytest.raises(ValueError, match="is not a safetensors file"):
        load_checkpoint(bad)
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))  # valid safetensors, but no config in the metadata
    with pytest.raises(ValueError, match="without the model config.*hf.from_pretrained"):
        load_checkpoint(plain)
    good = save_checkpoint(Transformer(CFG), tmp_path / "good")
    assert load_checkpoint(good).cfg.D == CFG.D
    assert json.loads(good.with_suffix(".json").read_text())["config"]["D"] == CFG.D
