/*
 * virtio_blk.c: the virtio block driver (virtio 1.1 §5.2) on queue 0.
 *
 * A request takes one of `slots` fixed slots: slot i owns descriptors
 * 3i (the 16-byte header, device-readable), 3i+1 (the data, if any) and
 * 3i+2 (the status byte, device-writable), and its header and status
 * byte in the device's private area. The used element's id names the slot;
 * an id that is not a slot in flight is the device's fault.
 */
#include "virtio.h"

/* Offsets in the device's private area (VIRTIO_PRIV_OFFSET). */
#define PRIV_HDR	0x000	/* BLK_MAX_SLOTS * 16 bytes */
#define PRIV_STATUS	0x600	/* BLK_MAX_SLOTS bytes */
#define PRIV_MISC	0x700	/* 64 bytes */

#define BLK_CONFIG_CAPACITY	0	/* le64, in 512-byte sectors */

static struct blk_dev blks[VIRTIO_MAX_DEVICES];
static unsigned nblk;

uint64_t virtio_blk_features(void)
{
	return FEATURE(VIRTIO_BLK_F_RO) | FEATURE(VIRTIO_BLK_F_FLUSH) |
	       FEATURE(VIRTIO_BLK_F_DISCARD) | FEATURE(VIRTIO_BLK_F_WRITE_ZEROES) |
	       FEATURE(VIRTIO_RING_F_EVENT_IDX);
}

void virtio_blk_count_device(struct virtio_dev *d)
{
	if (nblk < VIRTIO_MAX_DEVICES)
		blks[nblk++].dev = d;
}

void virtio_blk_attach(struct virtio_dev *d)
{
	uint64_t priv = d->area + VIRTIO_PRIV_OFFSET;
	struct blk_dev *b = NULL;
	uint16_t slots;

	for (unsigned i = 0; i < nblk; i++) {
		if (blks[i].dev == d)
			b = &blks[i];
	}
	if (!b)
		return;
	slots = d->vq.size / 3;
	b->slots = slots < BLK_MAX_SLOTS ? slots : BLK_MAX_SLOTS;
	b->hdr = (volatile struct virtio_blk_req_hdr *)(uintptr_t)(priv + PRIV_HDR);
	b->status = (volatile uint8_t *)(uintptr_t)(priv + PRIV_STATUS);
	b->misc = (uint8_t *)(uintptr_t)(priv + PRIV_MISC);
	b->capacity = virtio_config_read64(d, BLK_CONFIG_CAPACITY);
}

unsigned blk_count(void)
{
	return nblk;
}

struct blk_dev *blk_get(unsigned index)
{
	return index < nblk ? &blks[index] : NULL;
}

bool blk_ready(const struct blk_dev *b)
{
	return b->dev->state == VIRTIO_OK && b->slots > 0;
}

void blk_prepare(struct blk_dev *b, uint16_t slot, uint32_t type, uint64_t sector,
		 uint64_t data, uint32_t data_len, bool device_writes)
{
	struct virtq *vq = &b->dev->vq;
	uint16_t first = (uint16_t)(3 * slot);
	volatile struct virtio_blk_req_hdr *hdr = &b->hdr[slot];

	hdr->type = type;
	hdr->reserved = 0;
	hdr->sector = sector;
	b->status[slot] = VIRTIO_BLK_S_NONE;

	virtq_set_desc(vq, first, (uint64_t)(uintptr_t)hdr, sizeof(*hdr),
		       VIRTQ_DESC_F_NEXT, data_len ? first + 1 : first + 2);
	if (data_len)
		virtq_set_desc(vq, first + 1, data, data_len,
			       VIRTQ_DESC_F_NEXT |
			       (device_writes ? VIRTQ_DESC_F_WRITE : 0),
			       first + 2);
	virtq_set_desc(vq, first + 2, (uint64_t)(uintptr_t)&b->status[slot], 1,
		       VIRTQ_DESC_F_WRITE, 0);
}

void blk_submit(struct blk_dev *b, uint16_t slot)
{
	b->busy[slot] = true;
	virtq_push(&b->dev->vq, (uint16_t)(3 * slot));
}

void blk_kick(struct blk_dev *b)
{
	virtq_kick(&b->dev->vq);
}

int blk_reap(struct blk_dev *b, uint16_t *slot)
{
	uint32_t id, len;

	if (!virtq_pop_used(&b->dev->vq, &id, &len))
		return 0;
	if (id % 3 != 0 || id / 3 >= b->slots || !b->busy[id / 3])
		return BLK_BAD_DEVICE;
	*slot = (uint16_t)(id / 3);
	b->busy[*slot] = false;
	return 1;
}

int blk_do(struct blk_dev *b, uint32_t type, uint64_t sector, uint64_t data,
	   uint32_t data_len, bool device_writes)
{
	uint16_t slot;
	int r;

	blk_prepare(b, 0, type, sector, data, data_len, device_writes);
	blk_submit(b, 0);
	blk_kick(b);
	if (!virtq_wait_used(&b->dev->vq))
		return BLK_TIMEOUT;
	r = blk_reap(b, &slot);
	if (r <= 0)
		return r < 0 ? r : BLK_BAD_DEVICE;
	return b->status[slot];
}
