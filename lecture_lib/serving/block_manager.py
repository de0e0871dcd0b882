"""The KV block pool: PagedAttention's memory manager (Kwon et al. 2023, arXiv 2309.06180).

The KV cache is one pool of ``num_blocks`` blocks of ``block_size`` token slots each. A sequence
owns a **block table**, the list of block ids that hold its tokens in order: token i lives in
block ``table[i // block_size]`` at offset ``i % block_size``. Memory is allocated a block at a
time as the sequence grows, so at most its last block is partly empty (vLLM: under 4% waste,
against 60-80% for caches reserved at the maximum length).

Blocks are shared by reference counting:

- **Prefix caching.** A full block is identified by a chained hash: hash(parent block's hash,
  its own tokens), so equal hashes mean equal *prefixes*, not just equal blocks. A block's hash
  is published only once its keys and values are computed (``commit``, which the engine calls
  after each step), so no sequence can hit a block that is still being filled. A new prompt
  whose first blocks hash the same as blocks already computed reuses them (no prefill for those
  tokens). A block whose last sequence is freed keeps its hash and content in the free queue,
  available for a later hit until the pool needs it: allocation takes the least recently freed
  block first (LRU eviction), and only then does its hash disappear. The last, partial block of
  a prompt is never shared, and when a whole prompt hits, its last token is still recomputed
  (its logits are needed to sample the first new token).
- **Copy-on-write.** ``fork`` gives a child sequence the parent's table (every block's count +1),
  as for ``n > 1`` samples of one prompt. Whichever sequence then writes into a shared last block
  gets a fresh copy first: ``append`` returns (source, destination) for the runner to copy.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import count


class NoFreeBlocks(RuntimeError):
    """The pool has no block left to give (the scheduler should preempt a sequence first)."""


_ids = count()


@dataclass
class Sequence:
    """What the block manager needs of a request: its tokens so far and its block table."""

    token_ids: list[int]
    seq_id: int = field(default_factory=lambda: next(_ids))
    block_table: list[int] = field(default_factory=list)
    num_cached_tokens: int = 0  # prompt tokens found in the prefix cache (no prefill needed)
    num_sealed_blocks: int = 0  # leading full blocks whose KV is computed and whose hash is published

    def __len__(self) -> int:
        return len(self.token_ids)


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None          # set once the block is full (and prefix caching is on)
    token_ids: tuple[int, ...] = ()  # the tokens behind the hash, to rule out collisions


def chain_hash(parent: int | None, tokens) -> int:
    """The prefix hash of a full block: its tokens and everything before them (via the parent's hash)."""
    return hash((parent, tuple(tokens)))


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int = 16, enable_prefix_caching: bool = True):
        if not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError(f"num_blocks must be a positive integer, got {num_blocks!r}.")
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}.")
        self.block_size, self.enable_prefix_caching = block_size, enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_queue: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))  # front: evicted first
        self.cached: dict[int, int] = {}  # prefix hash -> block id
        self.debug = False  # True: check the invariants after every change (tests)

    # -- the pool ---------------------------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        """Blocks with no sequence: truly empty ones and freed ones still holding cached content."""
        return len(self.free_queue)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _take(self) -> int:
        if not self.free_queue:
            raise NoFreeBlocks(f"All {len(self.blocks)} KV blocks of {self.block_size} tokens are in use: "
                               "preempt a sequence, or give the pool more blocks.")
        block_id, _ = self.free_queue.popitem(last=False)  # least recently freed
        block = self.blocks[block_id]
        if block.hash is not None:  # evict its cached prefix: the content is about to be overwritten
            if self.cached.get(block.hash) == block_id:
                del self.cached[block.hash]
            block.hash, block.token_ids = None, ()
        block.ref_count = 1
        return block_id

    def _ref(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.free_queue[block_id]
        block.ref_count += 1

    def _unref(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count < 1:
            raise RuntimeError(f"Block {block_id} freed twice (its reference count is already 0).")
        block.ref_count -= 1
        if block.ref_count == 0:
            self.free_queue[block_id] = None  # the back: evicted last; keeps its hash for later hits

    def _seal(self, seq: Sequence, index: int) -> None:
        """Block ``index`` of ``seq`` is full: give it its prefix hash (prefix caching on)."""
        if not self.enable_prefix_caching:
            return
        block = self.blocks[seq.block_table[index]]
        tokens = tuple(seq.token_ids[index * self.block_size:(index + 1) * self.block_size])
        parent = self.blocks[seq.block_table[index - 1]].hash if index else None
        block.hash, block.token_ids = chain_hash(parent, tokens), tokens
        self.cached.setdefault(block.hash, block.block_id)

    # -- sequences --------------------------------------------------------------------------

    def can_allocate(self, seq: Sequence) -> bool:
        """Whether ``allocate(seq)`` would succeed (a cache hit on a free block still takes it from the queue)."""
        return self.blocks_needed(len(seq)) <= self.num_free_blocks + self._hits_in_use(seq)

    def _hits_in_use(self, seq: Sequence) -> int:
        return sum(1 for b in self._prefix_hits(seq) if self.blocks[b].ref_count > 0)

    def _prefix_hits(self, seq: Sequence) -> list[int]:
        """Block ids already holding the longest cached prefix of ``seq``'s full blocks."""
        if not self.enable_prefix_caching:
            return []
        hits, parent = [], None
        for i in range(len(seq) // self.block_size):
            tokens = tuple(seq.token_ids[i * self.block_size:(i + 1) * self.block_size])
            h = chain_hash(parent, tokens)
            block_id = self.cached.get(h)
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                break
            hits.append(block_id)
            parent = h
        return hits

    def allocate(self, seq: Sequence) -> None:
        """Give a new sequence (its prompt in ``token_ids``) a block table: cached prefix blocks
        shared, the rest new. Sets ``seq.num_cached_tokens``: prompt tokens that need no prefill."""
        if seq.block_table:
            raise ValueError(f"Sequence {seq.seq_id} already has blocks: free it before allocating again.")
        if len(seq) < 1:
            raise ValueError("A sequence needs at least one token to allocate blocks for.")
        if not self.can_allocate(seq):
            raise NoFreeBlocks(f"Sequence {seq.seq_id} needs {self.blocks_needed(len(seq))} blocks, "
                               f"{self.num_free_blocks} are free.")
        hits = self._prefix_hits(seq)
        for block_id in hits:
            self._ref(block_id)
        seq.block_table = list(hits)
        for _ in range(self.blocks_needed(len(seq)) - len(hits)):
            seq.block_table.append(self._take())
        seq.num_sealed_blocks = len(hits)
        # a whole-prompt hit still recomputes the last token: its logits give the first new token
        seq.num_cached_tokens = min(len(hits) * self.block_size, len(seq) - 1)
        self._check()

    def append(self, seq: Sequence) -> tuple[int, int] | None:
        """``seq`` just got a new token (already in ``token_ids``): make room for its KV. Crossing
        into a new block allocates exactly one; writing into a block another sequence shares first
        copies it (returns (source, destination) block ids for the runner to copy); a block that
        becomes full is published by the next ``commit``."""
        n = len(seq)
        copy = None
        if n > len(seq.block_table) * self.block_size:  # the new token starts a new block
            seq.block_table.append(self._take())
        else:
            last = seq.block_table[-1]
            if self.blocks[last].ref_count > 1:  # copy-on-write: the block is shared
                new = self._take()
                self._unref(last)
                seq.block_table[-1] = new
                copy = (last, new)
        self._check()
        return copy

    def commit(self, seq: Sequence, num_computed_tokens: int) -> None:
        """The first ``num_computed_tokens`` tokens of ``seq`` now have their keys and values in
        the pool: publish the prefix hash of every block they fill (prefix caching on)."""
        if not 0 <= num_computed_tokens <= len(seq.block_table) * self.block_size:
            raise ValueError(f"Sequence {seq.seq_id} has {len(seq.block_table)} blocks; it cannot have "
                             f"{num_computed_tokens} computed tokens.")
        for i in range(seq.num_sealed_blocks, num_computed_tokens // self.block_size):
            self._seal(seq, i)
        seq.num_sealed_blocks = max(seq.num_sealed_blocks, num_computed_tokens // self.block_size)

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """The child shares every block of the parent (``n > 1`` samples of one prompt)."""
        if child.block_table:
            raise ValueError(f"Sequence {child.seq_id} already has blocks.")
        for block_id in parent.block_table:
            self._ref(block_id)
        child.block_table = list(parent.block_table)
        child.num_cached_tokens, child.num_sealed_blocks = parent.num_cached_tokens, parent.num_sealed_blocks
        self._check()

    def free(self, seq: Sequence) -> None:
        """Release a finished or preempted sequence's blocks, last block first, so that when the pool
        runs short the tail of a prefix is evicted before its head (which more prompts share)."""
        if not seq.block_table:
            raise RuntimeError(f"Sequence {seq.seq_id} has no blocks to free (freed twice?).")
        for block_id in reversed(seq.block_table):
            self._unref(block_id)
        seq.block_table, seq.num_sealed_blocks = [], 0
        self._check()

    # -- invariants ---------------------------------------------------------------------------

    def check(self, sequences=None) -> None:
        """Raise if the books do not balance: the free queue holds exactly the blocks nobody
        references; with ``sequences``, the reference counts sum to their block-table entries."""
        free = {b.block_id for b in self.blocks if b.ref_count == 0}
        if set(self.free_queue) != free or any(b.ref_count < 0 for b in self.blocks):
            raise AssertionError("free queue and reference counts disagree")
        if sequences is not None:
            entries = sum(len(s.block_table) for s in sequences)
            refs = sum(b.ref_count for b in self.blocks)
            if entries != refs:
                raise AssertionError(f"{refs} references but {entries} block-table entries")
        for h, block_id in self.cached.items():
            if self.blocks[block_id].hash != h:
                raise AssertionError(f"cached hash {h} points at block {block_id}, which holds another")

    def _check(self) -> None:
        if self.debug:
            self.check()
