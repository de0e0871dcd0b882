"""The offline API, vLLM-style: ``LLM(model).generate(prompts, SamplingParams(...))``.

    from lecture_lib.serving import LLM, SamplingParams
    llm = LLM("smollm2-135m-instruct")                 # a real chat model (or any Transformer)
    outs = llm.generate(["The capital of France is"], SamplingParams(max_tokens=20))
    print(outs[0].text, outs[0].finish_reason)

Prompts are strings (tokenized with the model's tokenizer) or lists of token ids. Every request
is queued at once and the engine runs until all are done, with a progress bar of finished
requests. ``LLM.engine`` is the ``Engine`` underneath, for the step-by-step interface
(``add_request``, ``step``, ``abort``) that a server drives.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tqdm.auto import tqdm

from .engine import Engine, Request


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 64
    temperature: float = 0.0       # 0: greedy
    top_k: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    n: int = 1                     # samples per prompt (they share the prompt's blocks)
    ignore_eos: bool = False


@dataclass
class Completion:
    prompt_token_ids: list[int]
    token_ids: list[int]
    finish_reason: str
    text: str | None = None        # when the LLM has a tokenizer
    ttft: float | None = None      # seconds from submission to the first token
    token_times: list[float] = field(default_factory=list)


class LLM:
    def __init__(self, model, tokenizer=None, **engine_args):
        """``model``: a ``Transformer``, or the name of a real model for ``pretrained.load``
        (which brings its tokenizer). ``engine_args``: as ``Engine`` (num_blocks, block_size,
        max_num_seqs, max_tokens_per_step, enable_prefix_caching, policy, ...)."""
        if isinstance(model, str):
            from ..pretrained import load
            loaded = load(model)
            model, tokenizer = loaded.model, tokenizer or loaded.tokenizer
        self.model, self.tokenizer = model, tokenizer
        self.engine = Engine(model, **engine_args)
        self.eos_id = tokenizer.eos_ids[0] if tokenizer is not None and tokenizer.eos_ids else None

    def _ids(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise TypeError("This LLM has no tokenizer: pass prompts as lists of token ids, or build it "
                                "with LLM(model, tokenizer=...).")
            return self.tokenizer.encode(prompt)
        return list(prompt)

    def _completion(self, req: Request) -> Completion:
        text = self.tokenizer.decode(req.output, skip_special_tokens=True) if self.tokenizer is not None else None
        return Completion(req.prompt, list(req.output), req.finish_reason, text, req.ttft, list(req.token_times))

    def generate(self, prompts, params: SamplingParams | list[SamplingParams] | None = None,
                 progress: bool = True) -> list:
        """One ``Completion`` per prompt, in order (a list of n for ``n`` > 1)."""
        params = params or SamplingParams()
        per_prompt = params if isinstance(params, list) else [params] * len(prompts)
        if len(per_prompt) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(per_prompt)} SamplingParams.")
        reqs = [self.engine.add_request(self._ids(p), sp.max_tokens, sp.temperature, self.eos_id, top_k=sp.top_k,
                                        stop=sp.stop_token_ids, n=sp.n, ignore_eos=sp.ignore_eos)
                for p, sp in zip(prompts, per_prompt)]
        total = sum(sp.n for sp in per_prompt)
        with tqdm(total=total, desc="requests", unit="req", disable=not progress) as bar:
            while self.engine.has_work:
                bar.update(len(self.engine.step()))
                if self.engine.last_step_tokens == 0 and not self.engine.running:
                    raise RuntimeError("No request could be scheduled (the pool cannot hold any waiting prompt).")
        return [[self._completion(s) for s in r.samples] if r.samples else self._completion(r) for r in reqs]
