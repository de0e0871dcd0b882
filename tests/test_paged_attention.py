"""PagedAttention: the PyTorch reference equals attention over each token's own prefix, and the
Triton kernel equals the reference (on a GPU; on a CPU through Triton's interpreter when Triton
is installed, which CPU builds of PyTorch do not ship)."""
import importlib.util
import math
import os
import subprocess
import sys

import pytest
import torch

from lecture_lib.serving.paged_attention import paged_attention_reference, paged_attention_triton


def case(device="cpu", dtype=torch.float32, P=40, K=2, bs=7, H=16, N=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    kp, vp = torch.randn(2, P, K, bs, H, generator=g)
    lengths = torch.tensor([1, 6, 7, 8, 30, 70])  # inside one block, exactly one, one more, many
    tables = torch.stack([torch.randperm(P, generator=g)[:10] for _ in lengths])
    q = torch.randn(len(lengths), N, H, generator=g)
    to = dict(device=device)
    return (q.to(dtype=dtype, **to), kp.to(dtype=dtype, **to), vp.to(dtype=dtype, **to),
            tables.to(torch.int32).to(**to), lengths.to(**to))


def test_reference_is_attention_over_each_tokens_prefix():
    q, kp, vp, tables, lengths = case(dtype=torch.float64)
    out = paged_attention_reference(q, kp, vp, tables.long(), lengths)
    K, G, H = kp.shape[1], q.shape[1] // kp.shape[1], q.shape[2]
    for t, n in enumerate(lengths.tolist()):
        keys = torch.cat([kp[b] for b in tables[t].tolist()], dim=1)[:, :n]  # [K n H], positions in order
        vals = torch.cat([vp[b] for b in tables[t].tolist()], dim=1)[:, :n]
        for head in range(q.shape[1]):
            w = torch.softmax(keys[head // G] @ q[t, head] / math.sqrt(H), dim=0)
            torch.testing.assert_close(out[t, head], w @ vals[head // G])


def test_bad_shapes_are_named():
    q, kp, vp, tables, lengths = case()
    with pytest.raises(ValueError, match="multiple"):
        paged_attention_reference(q[:, :5], kp, vp, tables, lengths)
    with pytest.raises(ValueError, match=r"\[T W\]"):
        paged_attention_reference(q, kp, vp, tables[:3], lengths)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the interpreter test covers CPUs)")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_triton_equals_reference_on_gpu(dtype, tol):
    for bs, K, N, H in [(7, 2, 6, 16), (16, 8, 32, 64), (16, 1, 4, 128)]:
        q, kp, vp, tables, lengths = case("cuda", dtype, bs=bs, K=K, N=N, H=H)
        ref = paged_attention_reference(q.float(), kp.float(), vp.float(), tables.long(), lengths)
        torch.testing.assert_close(paged_attention_triton(q, kp, vp, tables, lengths).float(), ref,
                                   atol=tol, rtol=tol)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                    reason="Triton is not installed (CPU builds of PyTorch do not ship it)")
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the compiled kernel is tested instead")
def test_triton_equals_reference_in_the_interpreter():
    code = ("import torch, sys; sys.path.insert(0, 'tests'); from test_paged_attention import case;"
            "from lecture_lib.serving.paged_attention import *;"
            "q, kp, vp, tables, lengths = case();"
            "ref = paged_attention_reference(q, kp, vp, tables, lengths);"
            "out = paged_attention_triton(q, kp, vp, tables, lengths, block_s=16);"
            "torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5); print('ok')")
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]
