/*
 * bench.c: the block benchmark, a driver loop in ring 3 that keeps
 * queue_depth requests in flight until `ops` have completed.
 *
 * Each round fills every free slot, publishes them with one kick (at most
 * one QueueNotify exit, none if the device said it is still busy), waits
 * for the first completion, then takes every completion there is. Slot i
 * reads into or writes from its own 64 KiB buffer at
 * BENCH_BUF_START + i * BENCH_BUF_SIZE. The host times the "start" and
 * "done" lines; the guest only counts.
 */
#include "virtio.h"

#define WRITE_FILL	0x5a	/* what the write modes write */

struct bench_state {
	uint64_t rng;		/* xorshift64 state */
	uint64_t next_block;	/* for the sequential modes */
	uint64_t blocks;	/* capacity in block_size units */
};

static uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

static uint64_t next_block(struct bench_state *st, enum bench_mode mode)
{
	uint64_t block;

	if (mode == BENCH_RANDREAD || mode == BENCH_RANDWRITE)
		return xorshift64(&st->rng) % st->blocks;
	block = st->next_block;
	st->next_block = block + 1 == st->blocks ? 0 : block + 1;
	return block;
}

void blk_bench(struct blk_dev *b, unsigned index, const struct bench_params *p)
{
	bool reads = p->mode == BENCH_RANDREAD || p->mode == BENCH_SEQREAD;
	uint32_t type = reads ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT;
	uint64_t sectors_per_block = p->block_size / 512;
	struct bench_state st = {
		.rng = 0x9e3779b97f4a7c15ULL,
		.next_block = 0,
		.blocks = b->capacity / sectors_per_block,
	};
	uint16_t free_slots[BENCH_MAX_QD];
	uint16_t nfree = p->queue_depth;
	uint64_t submitted = 0, done = 0, errors = 0;

	for (uint16_t i = 0; i < nfree; i++)
		free_slots[i] = (uint16_t)(nfree - 1 - i);
	if (!reads)
		memset((void *)BENCH_BUF_START, WRITE_FILL,
		       (size_t)p->queue_depth * BENCH_BUF_SIZE);

	out_str("blk-bench: start");
	out_line();
	while (done < p->ops) {
		uint16_t slot;
		int r;

		while (nfree && submitted < p->ops) {
			slot = free_slots[--nfree];
			blk_prepare(b, slot, type,
				    next_block(&st, p->mode) * sectors_per_block,
				    BENCH_BUF_START + slot * BENCH_BUF_SIZE,
				    p->block_size, reads);
			blk_submit(b, slot);
			submitted++;
		}
		blk_kick(b);
		if (!virtq_wait_used(&b->dev->vq))
			blk_device_failed(index, BLK_TIMEOUT);
		while ((r = blk_reap(b, &slot)) > 0) {
			if (b->status[slot] != VIRTIO_BLK_S_OK)
				errors++;
			free_slots[nfree++] = slot;
			done++;
		}
		if (r < 0)
			blk_device_failed(index, r);
	}
	out_str("blk-bench: done ops=");
	out_dec(done);
	out_str(" errors=");
	out_dec(errors);
	out_line();
}
