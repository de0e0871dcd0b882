"""The KV block pool's books: exact block ids for allocation, prefix hits and eviction order,
one block per boundary crossed, copy-on-write of exactly one block, and no leaks."""
import random

import pytest

from lecture_lib.serving import BlockManager, NoFreeBlocks, Sequence


def manager(num_blocks=8, block_size=16, **kw):
    bm = BlockManager(num_blocks, block_size, **kw)
    bm.debug = True  # check the invariants after every change
    return bm


def prefilled(bm, tokens):
    seq = Sequence(list(tokens))
    bm.allocate(seq)
    bm.commit(seq, len(seq))  # as the engine does after the prefill step
    return seq


def test_allocation_and_free_order():
    bm = manager()
    seq = prefilled(bm, range(40))  # 40 tokens: 2 full blocks + 8 tokens
    assert seq.block_table == [0, 1, 2] and seq.num_cached_tokens == 0
    assert list(bm.free_queue) == [3, 4, 5, 6, 7]
    bm.free(seq)
    # freed last block first: the tail of a prefix is evicted before its head
    assert list(bm.free_queue) == [3, 4, 5, 6, 7, 2, 1, 0]
    assert all(b.ref_count == 0 for b in bm.blocks)


def test_prefix_hit_shares_full_blocks_only():
    bm = manager()
    a = prefilled(bm, range(40))
    b = Sequence(list(range(32)) + [99] * 8)  # same first two blocks, another tail
    bm.allocate(b)
    assert b.block_table[:2] == [0, 1] and b.block_table[2] == 3 and b.num_cached_tokens == 32
    assert [bm.blocks[i].ref_count for i in (0, 1, 2, 3)] == [2, 2, 1, 1]
    c = Sequence(list(range(40)))  # same 40 tokens as a: its partial last block is never shared
    bm.allocate(c)
    assert c.block_table[:2] == [0, 1] and c.block_table[2] not in (2, 3) and c.num_cached_tokens == 32
    bm.free(a), bm.free(b), bm.free(c)
    bm.check([])


def test_whole_prompt_hit_recomputes_the_last_token():
    bm = manager()
    a = prefilled(bm, range(32))
    b = Sequence(list(range(32)))
    bm.allocate(b)
    assert b.block_table == a.block_table == [0, 1] and b.num_cached_tokens == 31


def test_freed_blocks_keep_their_hash_until_evicted_least_recently_freed_first():
    bm = manager(num_blocks=4)
    a = prefilled(bm, range(32))  # blocks 0, 1
    bm.free(a)
    assert list(bm.free_queue) == [2, 3, 1, 0]
    again = Sequence(list(range(32)))
    bm.allocate(again)  # a hit on freed blocks: they leave the free queue
    assert again.block_table == [0, 1] and again.num_cached_tokens == 31 and list(bm.free_queue) == [2, 3]
    bm.free(again)
    other = prefilled(bm, range(100, 148))  # 3 blocks: takes 2, 3, then evicts 1 (a's tail)
    assert other.block_table == [2, 3, 1] and list(bm.free_queue) == [0]
    bm.free(other)
    assert list(bm.free_queue) == [0, 1, 3, 2]
    late = Sequence(list(range(32)))
    bm.allocate(late)  # a's first block survived (a hit), its second was evicted (the front block is taken)
    assert late.block_table == [0, 1] and late.num_cached_tokens == 16


def test_append_allocates_only_at_a_boundary():
    bm = manager(block_size=4)
    seq = prefilled(bm, range(6))  # 2 blocks, 2 slots left in the second
    free = bm.num_free_blocks
    for token in (6, 7):
        seq.token_ids.append(token)
        assert bm.append(seq) is None and bm.num_free_blocks == free
    seq.token_ids.append(8)  # token 9 of the sequence: a third block
    assert bm.append(seq) is None and bm.num_free_blocks == free - 1 and len(seq.block_table) == 3


def test_copy_on_write_takes_exactly_one_block_and_leaves_the_parent_alone():
    bm = manager(block_size=4)
    parent = prefilled(bm, range(6))
    child = Sequence(list(parent.token_ids))
    bm.fork(parent, child)
    assert child.block_table == parent.block_table == [0, 1]
    free = bm.num_free_blocks
    child.token_ids.append(42)
    copy = bm.append(child)  # the child writes into the shared second block
    assert copy == (1, child.block_table[1]) and child.block_table[1] != 1
    assert bm.num_free_blocks == free - 1 and parent.block_table == [0, 1]
    assert bm.blocks[0].ref_count == 2 and bm.blocks[1].ref_count == 1
    parent.token_ids.append(7)
    assert bm.append(parent) is None  # the parent's block is its own again: no copy
    bm.check([parent, child])


def test_exhaustion_and_double_free_are_clear_errors():
    bm = manager(num_blocks=2, block_size=4)
    seq = prefilled(bm, range(8))
    big = Sequence(list(range(100, 104)))
    assert not bm.can_allocate(big)
    with pytest.raises(NoFreeBlocks, match="preempt"):
        seq.token_ids.append(9)
        bm.append(seq)
    bm.free(seq)
    with pytest.raises(RuntimeError, match="freed twice"):
        bm.free(seq)
    with pytest.raises(ValueError, match="positive"):
        BlockManager(0)


def test_prefix_caching_off_never_shares():
    bm = manager(enable_prefix_caching=False)
    a = prefilled(bm, range(32))
    b = Sequence(list(range(32)))
    bm.allocate(b)
    assert set(a.block_table).isdisjoint(b.block_table) and b.num_cached_tokens == 0


def test_random_workload_balances_the_books():
    """Random allocations, appends, forks, commits and frees: at every step the reference counts
    sum to the block-table entries, and at the end every block is free."""
    rng = random.Random(0)
    bm = manager(num_blocks=64, block_size=4)
    live = []
    for _ in range(2000):
        action = rng.random()
        if action < 0.3:
            seq = Sequence([rng.randrange(3) for _ in range(rng.randrange(1, 20))])  # small alphabet: many hits
            if bm.can_allocate(seq):
                bm.allocate(seq)
                live.append(seq)
        elif action < 0.75 and live:
            seq = rng.choice(live)
            seq.token_ids.append(rng.randrange(3))
            try:
                bm.append(seq)
            except NoFreeBlocks:
                seq.token_ids.pop()
            bm.commit(seq, len(seq) - 1)
        elif action < 0.85 and live:
            parent = rng.choice(live)
            child = Sequence(list(parent.token_ids))
            bm.fork(parent, child)
            live.append(child)
        elif live:
            bm.free(live.pop(rng.randrange(len(live))))
        bm.check(live)
    for seq in live:
        bm.free(seq)
    bm.check([])
    assert bm.num_free_blocks == 64 and all(b.ref_count == 0 for b in bm.blocks)
