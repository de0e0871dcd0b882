"""An OpenAI-compatible HTTP server on the engine (FastAPI + uvicorn).

    python -m lecture_lib.serve [--model smollm2-135m-instruct] [--port 8000]

Endpoints: ``POST /v1/completions`` and ``POST /v1/chat/completions`` (the model's own chat
template), streamed as server-sent events (``stream: true``, with a final ``usage`` chunk when
``stream_options.include_usage``) or not; ``GET /v1/models``; ``GET /health``; ``GET /stats``
(the engine's counters). Any OpenAI client, ``vllm bench serve --backend openai`` or our own
``lecture_lib.loadgen`` can drive it.

How it stays responsive:

- The engine runs in **its own thread** (``AsyncEngine``), never on the event loop: a step may
  take a hundred milliseconds, and the loop must keep streaming other requests meanwhile. The
  loop talks to it through a command queue (add, abort); the thread publishes each step's new
  tokens back with ``call_soon_threadsafe``.
- **Bounded admission**: at most ``max_num_seqs + max_waiting`` requests in flight; past that a
  request gets 503 with ``Retry-After`` at once, instead of an ever-growing queue.
- A client that **disconnects** (or a request past ``request_timeout``) is aborted: its blocks go
  back to the pool at the next engine iteration.
- **Bad input** gets a 400 with OpenAI's error body naming the field (malformed JSON, unknown
  fields, wrong types, ``max_tokens`` < 1, a prompt longer than the context, unsupported
  options); an error inside one request never stops the others.
- **Shutdown** (Ctrl-C, SIGTERM): uvicorn stops accepting connections and lets in-flight requests
  finish for ``--graceful-seconds``; what is left is then aborted and the engine thread stops.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import queue
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Literal

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .engine import Engine, Request


class Overloaded(Exception):
    """The server is at its in-flight limit: answer 503 and let the client retry."""


@dataclass
class Handle:
    """One HTTP request inside the engine: its engine request, and the asyncio queue that the
    engine thread feeds with (sample index, new token ids, finish reason or None)."""
    events: asyncio.Queue
    loop: asyncio.AbstractEventLoop
    deadline: float
    req: Request | None = None
    sent: list[int] = field(default_factory=list)  # tokens published so far, per sample
    timed_out: bool = False
    closed: bool = False


class AsyncEngine:
    """The engine in a background thread, fed through a command queue."""

    def __init__(self, engine: Engine, max_waiting: int = 64, request_timeout: float = 600.0):
        self.engine, self.request_timeout = engine, request_timeout
        self.max_in_flight = engine.max_num_seqs + max_waiting
        self.commands: queue.Queue = queue.Queue()
        self.handles: dict[int, Handle] = {}  # engine request id -> handle (engine thread only)
        self.in_flight = 0                    # guarded by the lock
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = False
        self.errors = 0
        self.thread = threading.Thread(target=self._run, name="engine", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Abort whatever is still in flight and stop the thread."""
        self.stopping = True
        self.wake.set()
        self.thread.join(timeout=30)

    # ---- called from the event loop -----------------------------------------------------------

    async def submit(self, prompt: list[int], params: dict) -> Handle:
        """Queue a request; raises ``Overloaded`` past the in-flight limit and ``ValueError``
        (from the engine's own checks) for a request it refuses."""
        with self.lock:
            if self.stopping or self.in_flight >= self.max_in_flight:
                raise Overloaded()
            self.in_flight += 1
        loop = asyncio.get_running_loop()
        handle = Handle(asyncio.Queue(), loop, time.monotonic() + self.request_timeout)
        done: concurrent.futures.Future = concurrent.futures.Future()
        self.commands.put(("add", handle, prompt, params, done))
        self.wake.set()
        try:
            await asyncio.wrap_future(done)
        except BaseException:
            self._release()
            raise
        return handle

    def abort(self, handle: Handle) -> None:
        """The client is gone (or done): free the request's blocks at the next iteration."""
        if not handle.closed:
            handle.closed = True
            self.commands.put(("abort", handle))
            self.wake.set()

    def stats(self) -> dict:
        e = self.engine
        return {"running": len(e.running), "waiting": len(e.waiting), "in_flight": self.in_flight,
                "free_blocks": e.blocks.num_free_blocks, "num_blocks": len(e.blocks.blocks),
                "block_size": e.blocks.block_size, "preemptions": e.preemptions, "steps": e.steps,
                "prompt_tokens": e.prompt_tokens, "prefix_hit_tokens": e.prefix_hit_tokens,
                "prefix_hit_rate": e.prefix_hit_tokens / e.prompt_tokens if e.prompt_tokens else 0.0,
                "policy": e.policy, "max_num_seqs": e.max_num_seqs,
                "max_tokens_per_step": e.max_tokens_per_step,
                "prefix_caching": e.blocks.enable_prefix_caching, "errors": self.errors,
                "step_summary": e.step_summary()}

    # ---- the engine thread -------------------------------------------------------------------

    def _release(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def _command(self, cmd) -> None:
        if cmd[0] == "add":
            _, handle, prompt, params, done = cmd
            try:
                handle.req = self.engine.add_request(prompt, **params)
            except Exception as e:  # refused: the HTTP layer turns it into a 400
                done.set_exception(e)
                return
            handle.sent = [0] * handle.req.n
            self.handles[handle.req.request_id] = handle
            done.set_result(None)
        else:
            handle = cmd[1]
            if handle.req is not None and self.handles.pop(handle.req.request_id, None) is not None:
                self.engine.abort(handle.req)
                self._release()

    def _publish(self) -> None:
        """Each request's new tokens since the last step, to its event queue; finished ones leave."""
        for rid, handle in list(self.handles.items()):
            req = handle.req
            samples = req.samples or [req]
            for i, r in enumerate(samples):
                new = r.output[handle.sent[i]:]
                if new or r.finish_reason is not None:
                    handle.sent[i] = len(r.output)
                    event = (i, list(new), r.finish_reason)
                    handle.loop.call_soon_threadsafe(handle.events.put_nowait, event)
            if not req.samples and req.n > 1 and req.finish_reason is not None:
                for i in range(1, req.n):  # aborted before its prompt was done: no samples were forked
                    handle.loop.call_soon_threadsafe(handle.events.put_nowait, (i, [], req.finish_reason))
            if all(r.finish_reason is not None for r in samples):
                del self.handles[rid]
                self._release()

    def _expire(self) -> None:
        now = time.monotonic()
        for rid, handle in list(self.handles.items()):
            if now > handle.deadline:
                handle.timed_out = True
                self.engine.abort(handle.req)

    def _run(self) -> None:
        self.run_loop(lambda: False)

    def run_loop(self, done) -> None:
        """Serve commands and step the engine until ``stop()`` is called or ``done()`` is true;
        then abort what is left. The CLI runs this in the main thread: PyTorch's CPU kernels
        run about twice as slowly in a second thread on a small machine (its OpenMP workers
        compete with the main thread's), and the engine is where the time goes."""
        while True:
            while True:
                try:
                    self._command(self.commands.get_nowait())
                except queue.Empty:
                    break
            if self.stopping or done():
                self.stopping = True
                for handle in list(self.handles.values()):
                    self.engine.abort(handle.req)
                self._publish()
                return
            if self.engine.has_work:
                try:
                    self.engine.step()
                except Exception:  # one bad step must not kill the server: fail what was running
                    self.errors += 1
                    traceback.print_exc()
                    for r in list(self.engine.running):
                        self.engine.abort(r)
                self._expire()
                self._publish()
            else:
                self.wake.wait(timeout=0.1)
                self.wake.clear()


# ---- the OpenAI request bodies ---------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    model: str | None = None
    temperature: float = 1.0  # OpenAI's default; 0 is greedy
    top_p: float = 1.0
    top_k: int | None = None  # an extension (vLLM's): -1 or 0 means no limit
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    ignore_eos: bool = False  # an extension (vLLM's): generate max_tokens whatever is sampled
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0  # vLLM's bench sends 1.0
    logprobs: int | bool | None = None
    user: str | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int = 16
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None


class Message(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def _unsupported(body: _Sampling) -> None:
    """Options the engine does not implement: refuse them by name rather than ignore them."""
    checks = [("top_p", body.top_p == 1.0, "only top_p = 1.0 (no nucleus sampling); use top_k"),
              ("seed", body.seed is None, "per-request seeds are not supported"),
              ("presence_penalty", body.presence_penalty == 0.0, "penalties are not supported"),
              ("frequency_penalty", body.frequency_penalty == 0.0, "penalties are not supported"),
              ("repetition_penalty", body.repetition_penalty == 1.0, "penalties are not supported"),
              ("logprobs", not body.logprobs, "logprobs are not returned")]
    if isinstance(body, CompletionRequest):
        checks += [("echo", not body.echo, "echo is not supported"),
                   ("best_of", body.best_of in (None, 1), "best_of is not supported; use n"),
                   ("suffix", body.suffix is None, "suffix is not supported")]
    for param, ok, why in checks:
        if not ok:
            raise BadRequest(f"{param}: {why}.", param)
    if not 0.0 <= body.temperature <= 100.0:
        raise BadRequest(f"temperature must be in [0, 100], got {body.temperature}.", "temperature")
    if not isinstance(body.n, int) or body.n < 1:
        raise BadRequest(f"n must be a positive integer, got {body.n}.", "n")


def _error(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error", headers=None):
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}},
                        status_code=status, headers=headers)


# ---- the app ---------------------------------------------------------------------------------------

class TextStream:
    """Incremental detokenization of one sample: text deltas from growing token lists, holding back
    an incomplete UTF-8 character and the last characters that may begin a stop string (sent text
    cannot be taken back), and cutting at the first stop string."""

    def __init__(self, tokenizer, stop: list[str]):
        self.tokenizer, self.stop = tokenizer, stop
        self.ids: list[int] = []
        self.sent = ""
        self.stopped = False

    def push(self, new_ids: list[int], final: bool) -> str:
        self.ids += new_ids
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        for s in self.stop:
            cut = text.find(s)
            if cut != -1:
                text, self.stopped = text[:cut], True
        if not final and not self.stopped:
            if text.endswith("\ufffd"):
                text = text[:-1]  # half a character: wait for its other bytes
            hold = max((len(s) - 1 for s in self.stop), default=0)  # may be the start of a stop string
            text = text[:max(len(self.sent), len(text) - hold)]
        delta, self.sent = text[len(self.sent):], text
        return delta


def build_app(async_engine: AsyncEngine, tokenizer, model_name: str, engine_thread: bool = True):
    """``engine_thread``: the app starts the engine's thread on startup and stops it on shutdown
    (tests, notebooks); False when the caller runs ``async_engine.run_loop`` itself (the CLI)."""
    engine = async_engine.engine
    S_max = engine.cfg.S_max
    eos = tokenizer.eos_ids[0] if tokenizer.eos_ids else None

    async def lifespan(app):
        if engine_thread:
            async_engine.start()
        yield
        if engine_thread:
            async_engine.stop()

    app = FastAPI(title="lecture_lib server", lifespan=lifespan)
    app.state.async_engine = async_engine

    @app.get("/health")
    async def health():
        return {"status": "ok", **{k: v for k, v in async_engine.stats().items() if k in ("running", "waiting")}}

    @app.get("/stats")
    async def stats():
        return async_engine.stats()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0,
                                            "owned_by": "lecture_lib", "max_model_len": S_max}]}

    async def parse(http: HTTPRequest, kind):
        raw = await http.body()
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadRequest(f"The request body is not valid JSON: {e}. Send a JSON object.")
        if not isinstance(data, dict):
            raise BadRequest("The request body must be a JSON object.")
        try:
            body = kind.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise BadRequest(f"{where}: {first['msg']} ({len(e.errors())} problem(s) in the request).", where)
        _unsupported(body)
        if body.model not in (None, model_name):
            raise BadRequest(f"Unknown model {body.model!r}: this server serves {model_name!r}.", "model")
        return body

    def prompt_ids(body) -> list[int]:
        if isinstance(body, ChatRequest):
            try:
                return tokenizer.encode_chat([m.model_dump() for m in body.messages])
            except ValueError as e:
                raise BadRequest(str(e), "messages")
        p = body.prompt
        if isinstance(p, list) and p and isinstance(p[0], (str, list)):
            if len(p) != 1:
                raise BadRequest("Send one prompt per request (a list of several prompts is not supported).", "prompt")
            p = p[0]
        ids = tokenizer.encode(p) if isinstance(p, str) else list(p)
        if not ids:
            raise BadRequest("The prompt is empty: send at least one token.", "prompt")
        bad = [t for t in ids if not 0 <= t < engine.cfg.V]
        if bad:
            raise BadRequest(f"Token ids must lie in [0, {engine.cfg.V}), got {bad[:5]}.", "prompt")
        return ids

    def sampling(body, ids) -> tuple[dict, int, list[str]]:
        max_tokens = body.max_tokens if isinstance(body, CompletionRequest) else \
            (body.max_completion_tokens or body.max_tokens or S_max - len(ids))
        if max_tokens < 1:
            raise BadRequest(f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens")
        if len(ids) + max_tokens > S_max:
            raise BadRequest(f"The prompt ({len(ids)} tokens) plus max_tokens ({max_tokens}) exceed the model's "
                             f"context of {S_max} tokens: shorten the prompt or lower max_tokens.", "max_tokens")
        top_k = None if body.top_k in (None, -1, 0) else body.top_k
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        params = dict(max_tokens=max_tokens, temperature=body.temperature, eos_id=eos, top_k=top_k,
                      stop=tuple(tokenizer.eos_ids[1:]), n=body.n, ignore_eos=body.ignore_eos)
        return params, max_tokens, stop

    async def handle_request(http: HTTPRequest, kind):
        try:
            body = await parse(http, kind)
            ids = prompt_ids(body)
            params, _, stop = sampling(body, ids)
            handle = await async_engine.submit(ids, params)
        except BadRequest as e:
            return _error(400, str(e), e.param)
        except Overloaded:
            return _error(503, "The server is at capacity (its request queue is full); retry later.",
                          kind="server_overloaded", headers={"Retry-After": "1"})
        except ValueError as e:  # the engine's own refusals
            return _error(400, str(e))
        chat = kind is ChatRequest
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:16]
        created = int(time.time())
        obj = "chat.completion" if chat else "text_completion"
        streams = [TextStream(tokenizer, stop) for _ in range(body.n)]
        counts, finish = [0] * body.n, [None] * body.n

        def usage():
            return {"prompt_tokens": len(ids), "completion_tokens": sum(counts),
                    "total_tokens": len(ids) + sum(counts)}

        async def events():
            """(index, text delta, finish reason) until every sample is done."""
            while not all(finish):
                try:
                    i, new, reason = await asyncio.wait_for(handle.events.get(), timeout=1.0)
                except asyncio.TimeoutError:
                    if await http.is_disconnected():
                        raise asyncio.CancelledError()
                    continue
                if finish[i]:
                    continue
                counts[i] += len(new)
                delta = streams[i].push(new, reason is not None)
                if streams[i].stopped:
                    reason = "stop"
                if reason is not None:
                    finish[i] = "length" if reason == "length" else "stop" if reason == "stop" else "abort"
                yield i, delta, finish[i]
                if all(s.stopped or f for s, f in zip(streams, finish)) and any(s.stopped for s in streams):
                    async_engine.abort(handle)  # stop strings: nothing more is needed from the engine

        def choice(i, delta, reason):
            if chat:
                return {"index": i, "delta": {"content": delta}, "logprobs": None, "finish_reason": reason}
            return {"index": i, "text": delta, "logprobs": None, "finish_reason": reason}

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            async def sse():
                try:
                    first = [True] * body.n  # chat: the role goes with the first content, not before it
                    async for i, delta, reason in events():
                        if reason == "abort" and handle.timed_out:
                            yield _sse({"error": {"message": "The request timed out.", "type": "timeout",
                                                  "code": 504}})
                            break
                        if delta or reason:
                            c = choice(i, delta, reason)
                            if chat and first[i]:
                                c["delta"]["role"], first[i] = "assistant", False
                            yield _sse({"id": rid, "object": obj + (".chunk" if chat else ""), "created": created,
                                        "model": model_name, "choices": [c]})
                    if include_usage:
                        yield _sse({"id": rid, "object": obj + (".chunk" if chat else ""), "created": created,
                                    "model": model_name, "choices": [], "usage": usage()})
                    yield "data: [DONE]\n\n"
                finally:  # normal end, or the client went away mid-stream (the generator is closed)
                    async_engine.abort(handle)

            return StreamingResponse(sse(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

        texts = [""] * body.n
        try:
            async for i, delta, reason in events():
                texts[i] += delta
        except asyncio.CancelledError:
            async_engine.abort(handle)
            raise
        finally:
            async_engine.abort(handle)
        if handle.timed_out:
            return _error(504, "The request timed out.", kind="timeout")
        if chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "logprobs": None,
                        "finish_reason": f} for i, (t, f) in enumerate(zip(texts, finish))]
        else:
            choices = [{"index": i, "text": t, "logprobs": None, "finish_reason": f}
                       for i, (t, f) in enumerate(zip(texts, finish))]
        return JSONResponse({"id": rid, "object": obj, "created": created, "model": model_name,
                             "choices": choices, "usage": usage()})

    @app.post("/v1/completions")
    async def completions(http: HTTPRequest):
        return await handle_request(http, CompletionRequest)

    @app.post("/v1/chat/completions")
    async def chat_completions(http: HTTPRequest):
        return await handle_request(http, ChatRequest)

    return app


def _sse(obj) -> str:
    return f"data: {json.dumps(obj)}\n\n"


# ---- starting it ---------------------------------------------------------------------------------

def load_model(name: str, device=None, dtype=None):
    """(model, tokenizer, served name) for a name: a real model known to ``pretrained`` (or a local
    path), a trained checkpoint of the series (``target``, ...), or ``random:<preset>`` for
    random weights of a preset shape (benchmarks: prompts as token ids, ``IdTokenizer``)."""
    from .. import checkpoints, devices
    from ..config import get_config
    from ..pretrained import MODELS, load
    from ..pretrained.tokenizer import ByteTokenizer, IdTokenizer
    device, dtype = devices.resolve(device, dtype)
    if name.startswith("random:"):
        from ..measure.bench import build_model
        cfg = get_config(name.removeprefix("random:"))
        return build_model(cfg, device, dtype), IdTokenizer(cfg.V), name
    if name in MODELS or "/" in name or name.endswith((".gguf", ".whl")):
        loaded = load(name, device=device, dtype=dtype)
        return loaded.model, loaded.tokenizer, name
    if name in checkpoints.list_checkpoints():
        return checkpoints.load_checkpoint(name).to(device), ByteTokenizer(), name
    raise ValueError(f"Unknown model {name!r}: use a real model ({', '.join(MODELS)}), a trained checkpoint "
                     f"({', '.join(checkpoints.list_checkpoints())}) or random:<preset>.")


def build_server(model, tokenizer, name: str, *, kv_cache_gb: float | None = None, block_size: int = 16,
                 max_num_seqs: int = 32, max_tokens_per_step: int = 2048, prefix_caching: bool = True,
                 policy: str = "continuous", max_waiting: int = 64, request_timeout: float = 600.0,
                 compile: bool = False, engine_thread: bool = True):
    """The FastAPI app for a model. ``kv_cache_gb``: the KV pool's size (default: 1 GB on a CPU,
    40% of the free memory on a GPU), capped at what ``max_num_seqs`` sequences of the full
    context could ever use."""
    from .. import analysis
    w = model.norm.weight
    per_block = analysis.kv_bytes_per_token(model.cfg, w.element_size()) * block_size
    if kv_cache_gb is None:
        kv_cache_gb = 0.4 * torch_free_bytes(w.device) / 1e9 if w.device.type == "cuda" else 1.0
    most = max_num_seqs * -(-model.cfg.S_max // block_size)
    num_blocks = max(1, min(most, int(kv_cache_gb * 1e9 // per_block)))
    engine = Engine(model, num_blocks, block_size, max_num_seqs, max_tokens_per_step, prefix_caching,
                    policy=policy, compile=compile, log_steps=10_000, keep_finished=False)
    return build_app(AsyncEngine(engine, max_waiting, request_timeout), tokenizer, name, engine_thread)


def torch_free_bytes(device) -> int:
    import torch
    free, _ = torch.cuda.mem_get_info(device)
    return free


def main(argv=None):
    import argparse
    import signal

    import uvicorn
    ap = argparse.ArgumentParser(prog="python -m lecture_lib.serve", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct",
                    help="a real model, a trained checkpoint (e.g. target) or random:<preset>")
    ap.add_argument("--served-model-name", default=None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--kv-cache-gb", type=float, default=None)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--max-num-seqs", type=int, default=32)
    ap.add_argument("--max-tokens-per-step", type=int, default=2048, help="the token budget of a step")
    ap.add_argument("--no-prefix-caching", action="store_true")
    ap.add_argument("--policy", choices=["continuous", "static"], default="continuous")
    ap.add_argument("--max-waiting", type=int, default=64, help="requests queued beyond max-num-seqs; then 503")
    ap.add_argument("--request-timeout", type=float, default=600.0, help="seconds")
    ap.add_argument("--graceful-seconds", type=float, default=10.0, help="let in-flight requests finish on shutdown")
    ap.add_argument("--compile", action="store_true", help="torch.compile the decode step (GPU)")
    args = ap.parse_args(argv)
    model, tokenizer, name = load_model(args.model, args.device, args.dtype)
    app = build_server(model, tokenizer, args.served_model_name or name, kv_cache_gb=args.kv_cache_gb,
                       block_size=args.block_size, max_num_seqs=args.max_num_seqs,
                       max_tokens_per_step=args.max_tokens_per_step, prefix_caching=not args.no_prefix_caching,
                       policy=args.policy, max_waiting=args.max_waiting, request_timeout=args.request_timeout,
                       compile=args.compile, engine_thread=False)
    async_engine = app.state.async_engine
    # HTTP in a thread, the engine in the main thread (see AsyncEngine.run_loop).
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                           timeout_graceful_shutdown=args.graceful_seconds))
    http = threading.Thread(target=server.run, name="http", daemon=True)
    def shut_down(*_):  # Ctrl-C or SIGTERM: uvicorn stops accepting and drains in-flight requests,
        server.should_exit = True  # which the engine keeps serving until the HTTP thread is done
    signal.signal(signal.SIGINT, shut_down)
    signal.signal(signal.SIGTERM, shut_down)
    http.start()
    print(f"serving {args.served_model_name or name} on http://{args.host}:{args.port} "
          f"({args.policy} batching, max {args.max_num_seqs} sequences)", flush=True)
    async_engine.run_loop(lambda: not http.is_alive())
    http.join(timeout=5)


class ServerThread:
    """Run an app with uvicorn in a background thread of this process, on a free port of
    127.0.0.1 (tests): ``with ServerThread(app) as url: ...``."""

    def __init__(self, app):
        import uvicorn
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m lecture_lib.serve ...`` as a child process (notebooks): waits until /health
    answers, ``stop()`` shuts it down gracefully. Usable as a context manager."""

    def __init__(self, *args: str, port: int | None = None, timeout: float = 300.0):
        import atexit
        import subprocess
        import sys

        import httpx
        port = free_port() if port is None else port
        self.url, self.args = f"http://127.0.0.1:{port}", args
        import tempfile
        self.log = tempfile.NamedTemporaryFile("w+", prefix="lecture_lib_serve_", suffix=".log", delete=False)
        self.proc = subprocess.Popen([sys.executable, "-m", "lecture_lib.serve", "--port", str(port), *args],
                                     stdout=self.log, stderr=subprocess.STDOUT, text=True)  # a file: a pipe can fill up
        atexit.register(self.stop)  # never leave a server behind
        start = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"The server exited with code {self.proc.returncode}:\n{self.output()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - start > timeout:
                self.stop()
                raise TimeoutError(f"The server did not answer /health within {timeout:.0f} s.")
            time.sleep(0.2)

    def output(self) -> str:
        """What the server printed so far."""
        with open(self.log.name) as f:
            return f.read()

    def stats(self) -> dict:
        import httpx
        return httpx.get(self.url + "/stats", timeout=5.0).json()

    def stop(self) -> None:
        import signal
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
