"""Decoding near the memory-bandwidth roofline, in plain PyTorch, for the library's own model.

``generate_cached`` is correct but pays, every token, for things that are not reading weights:
a Python loop over ~10 kernel launches per layer, a KV cache whose slice grows (new shapes every
step), and a host sync (``.tolist()``) to learn the token. ``FastGenerator`` removes them:

1. a static KV cache: one buffer per layer at the full length ``S_max``, written in place at the
   current position, the unused tail masked, so every decode step has the same shapes;
2. the one-token step compiled with ``torch.compile(mode="reduce-overhead", fullgraph=True)``:
   Inductor fuses the small ops, and CUDA graphs replay the step's hundreds of kernels with one
   launch (fullgraph proves there is no graph break, i.e. nothing that would fall back to Python);
3. no host sync per token: the position lives on the device, the next token is picked on the
   device (greedy argmax, or sampling as ``argmax(probs / Exponential(1) noise)``), and tokens are
   collected on the device and copied to the host once at the end;
4. fused projections: one QKV matrix (``Attention.fuse_qkv``) and one gate-and-up matrix
   (``SwiGLU.fuse_gate_up``), so one matrix-vector product (one kernel) instead of three and two.

    gen = FastGenerator(model, B=1, S_max=prompt_len + new_tokens)   # compile=True on CUDA
    gen.warmup(prompt_len)            # compiles and records the graph; returns the seconds it took
    out = gen.generate(prompt, new_tokens)          # a decode.Generation, tokens on the host
    out.tokens, out.decode_tokens_per_s

The prefill (the whole prompt in one forward) runs eager, or compiled separately with dynamic
shapes (``compile_prefill=True``): prompt lengths vary, and the decode step's graph must not.
"""
from __future__ import annotations

import contextlib
import time
import warnings

import torch
from torch import nn

from ..cache.static import StaticKVCache
from ..devices import synchronize
from ..model import Transformer
from .plain import check_ids
from .result import Generation
from .sampling import check_sampling, sample
from .stopping import check_token_id, finish_reasons_from_tokens, token_limits


def fuse_projections_(model: Transformer) -> int:
    """Fuse Q, K, V (``Attention.fuse_qkv``) and the MLP's gate and up (``SwiGLU.fuse_gate_up``)
    in every layer where they are still plain ``nn.Linear``; returns how many layers are fully
    fused now. Quantized layers are left alone (fuse before quantizing)."""
    fused = 0
    for block in model.layers:
        attn, mlp = block.attn, block.mlp
        if attn.wqkv is None and all(type(getattr(attn, n)) is nn.Linear for n in ("wq", "wk", "wv")):
            attn.fuse_qkv()
        if mlp.w_gate_up is None and all(type(getattr(mlp, n)) is nn.Linear for n in ("w_gate", "w_up")):
            mlp.fuse_gate_up()
        fused += attn.wqkv is not None and mlp.w_gate_up is not None
    if fused < len(model.layers):
        warnings.warn("fuse_projections_: some layers have quantized projections and stay unfused; "
                      "fuse (FastGenerator or fuse_projections_) before quantize_model_.", stacklevel=3)
    return fused


class FastGenerator:
    """Batch-B decoding at fixed shapes, optionally compiled with CUDA graphs.

    ``model``: a ``Transformer``; with ``fuse`` its Q/K/V and gate/up layers are fused *in place*.
    ``S_max``: the static cache length (default ``model.cfg.S_max``). Every step reads all of it
    (the tail is masked, not skipped), so pick the smallest that fits prompt + new tokens.
    ``compile``: compile the decode step (default: on CUDA only; Inductor on a CPU works but
    takes a minute to compile). On CUDA it uses ``mode="reduce-overhead"`` (CUDA graphs).
    ``compile_prefill``: also compile the prefill, with dynamic shapes (prompt lengths vary).
    ``sdpa_backend``: "math" (default; under compile on CUDA, Inductor then generates the decode
    attention itself, see FAST_DECODE.md) or None to let PyTorch pick a kernel.
    """

    def __init__(self, model: Transformer, B: int, S_max: int | None = None, *, compile: bool | None = None,
                 fuse: bool = True, compile_prefill: bool = False, sdpa_backend: str | None = "math"):
        self.model = model.eval()
        self.cfg = model.cfg
        self.B = B
        self.device = model.lm_head.weight.device
        dtype = model.norm.weight.dtype  # lm_head may be quantized; the norms keep the model dtype
        self.compiled = (self.device.type == "cuda") if compile is None else compile
        self.cudagraphs = self.compiled and self.device.type == "cuda"
        if fuse:
            fuse_projections_(model)
        self.cache = StaticKVCache(self.cfg, B, S_max or self.cfg.S_max, device=self.device, dtype=dtype)
        # Step inputs at fixed addresses: the token being fed, its position, the temperature.
        self._token = torch.zeros(B, 1, dtype=torch.long, device=self.device)
        self._pos = torch.zeros(1, dtype=torch.long, device=self.device)
        self._temperature = torch.ones((), dtype=torch.float32, device=self.device)
        self._out = torch.zeros(B, self.cache.S_max, dtype=torch.long, device=self.device)
        for t in (self._token, self._pos, self._temperature):
            torch._dynamo.mark_static_address(t)
        self._sample, self._top_k = False, None  # read by _decode_step; a change recompiles
        self._sdpa_backend = sdpa_backend
        self._warm: set = set()
        self.compile_seconds: float | None = None  # set by warmup(): compile + graph capture

        self._step = self._decode_step
        self._prefill = self._prefill_step
        if self.compiled:
            if self.cudagraphs:
                _set_inductor_flags()
            self._step = torch.compile(self._decode_step, fullgraph=True, dynamic=False,
                                       mode="reduce-overhead" if self.cudagraphs else None)
            if compile_prefill:
                self._prefill = torch.compile(self._prefill_step, dynamic=True)

    # -- the two compiled pieces ------------------------------------------------------------------

    def _prefill_step(self, prompt: torch.Tensor) -> torch.Tensor:
        return self.model(prompt, self.cache, 0)[:, -1]  # B V

    def _decode_step(self, token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        logits = self.model(token, self.cache, pos)[:, -1]  # B V
        return sample(logits, self._temperature if self._sample else None, self._top_k)

    def _decode_context(self):
        """The SDPA backend for decode steps. It matters at trace time (what gets compiled)."""
        if self._sdpa_backend is None or self.device.type != "cuda":
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel(getattr(SDPBackend, self._sdpa_backend.upper()))

    # -- generation -------------------------------------------------------------------------------

    def warmup(self, prompt_len: int = 16, temperature: float = 0.0, top_k: int | None = None) -> float:
        """Run a short generation so that compiling (and CUDA-graph capture, which needs a few
        calls) happens here and not inside a timed run. Returns the seconds it took, also kept
        in ``compile_seconds``: tens of seconds to minutes when compiling."""
        prompt = torch.zeros(self.B, prompt_len, dtype=torch.long, device=self.device)
        n = min(5, self.cache.S_max - prompt_len)  # 4 decode steps: compile, record, replay, replay
        t0 = time.perf_counter()
        self._run(prompt, n, temperature, top_k, time_per_token=False)
        seconds = time.perf_counter() - t0
        self._warm.add((temperature > 0, top_k))
        self.compile_seconds = seconds if self.compile_seconds is None else self.compile_seconds + seconds
        return seconds

    def generate(self, prompt: torch.Tensor, max_new_tokens, *, temperature: float = 0.0,
                 top_k: int | None = None, seed: int | None = None, time_per_token: bool = False,
                 eos_id: int | None = None, pad_id: int = 0, check_every: int = 16) -> Generation:
        """Decode up to ``max_new_tokens`` tokens after ``prompt`` ([B T0], B as constructed).

        Greedy when ``temperature == 0``. ``seed``: ``torch.manual_seed(seed)`` first, so sampled
        runs repeat (compiled and eager draw different random streams). ``time_per_token``:
        synchronize after every step to record ``token_times`` (slightly slower).
        ``max_new_tokens``: an int, or one limit per sequence. ``eos_id``: a sequence stops at
        this token (kept); the loop ends early once every sequence has stopped, which it checks
        every ``check_every`` steps (one host sync each: tokens stay on the device in between).
        Stopped sequences are padded with ``pad_id``. At fixed shapes a stopped sequence still
        rides along in every step until the batch ends: only a scheduler that changes the batch
        (continuous batching) saves its work.
        A first call with new settings runs ``warmup`` first, untimed.
        """
        if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.shape[0] != self.B:
            shape = tuple(prompt.shape) if isinstance(prompt, torch.Tensor) else type(prompt).__name__
            raise ValueError(f"prompt must be [B T] with B = {self.B} (the batch this FastGenerator "
                             f"was built for), got {shape}.")
        limits = token_limits(max_new_tokens, self.B)
        check_ids(prompt, self.cfg.V)
        check_sampling(temperature, top_k)
        check_token_id("eos_id", eos_id, self.cfg.V)
        check_token_id("pad_id", pad_id, self.cfg.V)
        if check_every < 1:
            raise ValueError(f"check_every must be a positive number of steps, got {check_every}.")
        self.cache.check_fits(prompt.shape[1] + max(limits))
        if (temperature > 0, top_k) not in self._warm:
            self.warmup(prompt.shape[1], temperature, top_k)
        if seed is not None:
            torch.manual_seed(seed)
        out = self._run(prompt.to(self.device), max(limits), temperature, top_k, time_per_token,
                        eos_id=eos_id, limits=limits, check_every=check_every)
        if eos_id is not None or len(set(limits)) > 1:
            out.lengths, out.finish_reasons = finish_reasons_from_tokens(out.tokens, limits, eos_id)
            for b, n in enumerate(out.lengths):
                out.tokens[b, n:] = pad_id
            out.pad_id = pad_id
        return out

    @torch.no_grad()
    def _run(self, prompt, n, temperature, top_k, time_per_token, eos_id=None, limits=None,
             check_every=16) -> Generation:
        self._sample, self._top_k = temperature > 0, top_k
        if self._sample:
            self._temperature.fill_(temperature)
        T0 = prompt.shape[1]
        if eos_id is not None:  # for the early exit: which step each sequence must reach
            limit_t = torch.tensor(limits, device=self.device)
        synchronize(self.device)
        t0 = time.perf_counter()
        first = sample(self._prefill(prompt), self._temperature if self._sample else None, top_k)
        self._out[:, 0] = first
        self._token.copy_(first[:, None])
        self._pos.fill_(T0)
        synchronize(self.device)  # the one sync before the end: splits TTFT from decode time
        t_first = time.perf_counter()
        times = [t_first - t0] if time_per_token else None
        steps = n
        with self._decode_context():
            for i in range(1, n):
                if eos_id is not None and i % check_every == 0 and self._all_stopped(i, eos_id, limit_t):
                    steps = i
                    break
                if self.cudagraphs:
                    torch.compiler.cudagraph_mark_step_begin()  # a new replay; old outputs are dead
                nxt = self._step(self._token, self._pos)
                # The graph reuses its output buffer on the next replay: copy the token out now.
                self._out[:, i] = nxt
                self._token.copy_(nxt[:, None])
                self._pos += 1  # on the device: no host round trip
                if time_per_token:
                    synchronize(self.device)
                    times.append(time.perf_counter() - t0)
        # One copy to the host (it waits for the device); copy=True: on a CPU, .cpu() would
        # return a view of _out, which the next call overwrites.
        tokens = self._out[:, :steps].to("cpu", copy=True)
        synchronize(self.device)
        t_end = time.perf_counter()
        return Generation(tokens, T0, token_times=times, ttft=t_first - t0, decode_seconds=t_end - t_first)

    def _all_stopped(self, i: int, eos_id: int, limits: torch.Tensor) -> bool:
        """Has every sequence produced its EOS or reached its limit in the first i tokens? (A sync.)"""
        hit_eos = (self._out[:, :i] == eos_id).any(dim=1)
        return bool((hit_eos | (limits <= i)).all())


def _set_inductor_flags() -> None:
    """The Inductor settings fast decoders use on CUDA (FAST_DECODE.md): coordinate-descent
    tuning of the generated kernels (with it, Inductor also turns the 1-row matmuls of decode
    into its own GEMV kernels, into which it fuses an int8 weight's dequantization), and the
    on-disk compile cache so a second run compiles faster."""
    import torch._inductor.config as inductor_config

    inductor_config.coordinate_descent_tuning = True
    inductor_config.fx_graph_cache = True
