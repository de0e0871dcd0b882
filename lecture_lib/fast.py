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
    out = gen.generate(prompt, new_tokens)
    out.tokens, out.decode_tokens_per_s

The prefill (the whole prompt in one forward) runs eager, or compiled separately with dynamic
shapes (``compile_prefill=True``): prompt lengths vary, and the decode step's graph must not.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from .config import ModelConfig
from .kv_cache import check_rope_fits, write_kv
from .model import Transformer
from .timing import synchronize


class StaticKVCache:
    """Keys and values at fixed shapes: one [B K S_max H] buffer per layer.

    Same interface as ``KVCache`` (``update``, ``S_max``, ``check_fits``), but per-layer buffers
    rather than one [L B K S H] tensor: under ``torch.compile``, Inductor writes a new token's K/V
    in place only when the written tensor is a whole graph input; an in-place write into a slice
    of a bigger buffer is compiled as copy-the-layer, update, copy-back, which reads and writes
    the whole cache every step. (This is also how Hugging Face's ``StaticCache`` is laid out.)
    """

    def __init__(self, cfg: ModelConfig, B: int, S_max: int, *, device=None, dtype=None):
        check_rope_fits(cfg, S_max)
        self.B, self.S_max = B, S_max
        shape = (B, cfg.K, S_max, cfg.H)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.L)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.L)]
        for t in self.k + self.v:
            # Tell the compiler these live at a fixed address (like weights): CUDA graphs then read
            # and write them in place instead of copying them in as fresh inputs every replay.
            torch._dynamo.mark_static_address(t)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def check_fits(self, length: int, what: str = "prompt plus new tokens") -> None:
        if length > self.S_max:
            raise ValueError(
                f"The {what} need {length} positions but the static KV cache holds S_max = "
                f"{self.S_max}. Build the FastGenerator with S_max >= {length}.")

    def update(self, layer: int, pos, k: torch.Tensor, v: torch.Tensor):
        """Write k, v ([B K T H]) at ``pos``; see ``KVCache.update`` (int: prefill, returns the
        filled prefix; 1-D device tensor: decode, returns the whole buffer, tail masked later)."""
        return write_kv(self.k[layer], self.v[layer], pos, k, v, self.check_fits)


def pick_next(logits: torch.Tensor, temperature: torch.Tensor | None = None,
              top_k: int | None = None) -> torch.Tensor:
    """Next tokens [B] from last-position logits [B V], with no host sync.

    Greedy when ``temperature`` is None. Otherwise sample from softmax(logits / temperature)
    (``temperature`` a device tensor, so changing it does not recompile) as
    ``argmax(p / E)`` with E_i ~ Exponential(1): E_i / p_i is exponential with rate p_i and the
    smallest of independent exponentials is i with probability p_i / sum(p), so this draws from
    p exactly. Unlike ``torch.multinomial`` it is plain elementwise ops and an argmax, which
    compile into the CUDA graph.
    """
    if temperature is None:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return (probs / torch.empty_like(probs).exponential_(1)).argmax(dim=-1)


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


@dataclass
class FastGeneration:
    """What ``FastGenerator.generate`` produced. ``tokens`` is on the host (copied once, at the end)."""

    tokens: torch.Tensor  # [B T_new]
    prompt_len: int
    ttft: float  # seconds: prefill + first token, synchronized
    decode_seconds: float  # from the first token to the last: the T_new - 1 decode steps
    token_times: list[float] | None = field(default=None)  # per token, only if time_per_token

    @property
    def B(self) -> int:
        return self.tokens.shape[0]

    @property
    def steps(self) -> int:
        """Decode steps timed: every token after the first (which the prefill produces)."""
        return self.tokens.shape[1] - 1

    @property
    def decode_tokens_per_s(self) -> float:
        """B tokens every decode step (same definition as ``Generation.decode_tokens_per_s``)."""
        return self.B * self.steps / self.decode_seconds if self.steps else float("nan")

    @property
    def seconds_per_step(self) -> float:
        return self.decode_seconds / self.steps if self.steps else float("nan")

    @property
    def end_to_end(self) -> float:
        return self.ttft + self.decode_seconds


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
        return pick_next(logits, self._temperature if self._sample else None, self._top_k)

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

    def generate(self, prompt: torch.Tensor, max_new_tokens: int, *, temperature: float = 0.0,
                 top_k: int | None = None, seed: int | None = None,
                 time_per_token: bool = False) -> FastGeneration:
        """Decode ``max_new_tokens`` tokens after ``prompt`` ([B T0], B as constructed).

        Greedy when ``temperature == 0``. ``seed``: ``torch.manual_seed(seed)`` first, so sampled
        runs repeat (compiled and eager draw different random streams). ``time_per_token``:
        synchronize after every step to record ``token_times`` (slightly slower).
        A first call with new settings runs ``warmup`` first, untimed.
        """
        if prompt.dim() != 2 or prompt.shape[0] != self.B:
            raise ValueError(f"prompt must be [B T] with B = {self.B} (the batch this FastGenerator "
                             f"was built for), got shape {tuple(prompt.shape)}.")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}.")
        self.cache.check_fits(prompt.shape[1] + max_new_tokens)
        if (temperature > 0, top_k) not in self._warm:
            self.warmup(prompt.shape[1], temperature, top_k)
        if seed is not None:
            torch.manual_seed(seed)
        return self._run(prompt.to(self.device), max_new_tokens, temperature, top_k, time_per_token)

    @torch.no_grad()
    def _run(self, prompt, n, temperature, top_k, time_per_token) -> FastGeneration:
        self._sample, self._top_k = temperature > 0, top_k
        if self._sample:
            self._temperature.fill_(temperature)
        T0 = prompt.shape[1]
        synchronize(self.device)
        t0 = time.perf_counter()
        first = pick_next(self._prefill(prompt), self._temperature if self._sample else None, top_k)
        self._out[:, 0] = first
        self._token.copy_(first[:, None])
        self._pos.fill_(T0)
        synchronize(self.device)  # the one sync before the end: splits TTFT from decode time
        t_first = time.perf_counter()
        times = [t_first - t0] if time_per_token else None
        with self._decode_context():
            for i in range(1, n):
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
        tokens = self._out[:, :n].to("cpu", copy=True)
        synchronize(self.device)
        t_end = time.perf_counter()
        return FastGeneration(tokens, T0, ttft=t_first - t0, decode_seconds=t_end - t_first,
                              token_times=times)


def _set_inductor_flags() -> None:
    """The Inductor settings fast decoders use on CUDA (FAST_DECODE.md): coordinate-descent
    tuning of the generated kernels (with it, Inductor also turns the 1-row matmuls of decode
    into its own GEMV kernels, into which it fuses an int8 weight's dequantization), and the
    on-disk compile cache so a second run compiles faster."""
    import torch._inductor.config as inductor_config

    inductor_config.coordinate_descent_tuning = True
    inductor_config.fx_graph_cache = True
