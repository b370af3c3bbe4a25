/*
 * virtio_rng.c: the virtio entropy driver (virtio 1.1 §5.4): one
 * device-writable buffer on queue 0; the used length says how many bytes
 * the device wrote.
 */
#include "virtio.h"

static struct virtio_dev *first_rng;

void virtio_rng_count_device(struct virtio_dev *d)
{
	if (!first_rng)
		first_rng = d;
}

struct virtio_dev *rng_first(void)
{
	return first_rng;
}

int64_t rng_read(struct virtio_dev *d, uint64_t buf, uint32_t len)
{
	struct virtq *vq = &d->vq;
	uint32_t id, used_len;

	virtq_set_desc(vq, 0, buf, len, VIRTQ_DESC_F_WRITE, 0);
	virtq_push(vq, 0);
	virtq_kick(vq);
	if (!virtq_wait_used(vq))
		return BLK_TIMEOUT;
	if (!virtq_pop_used(vq, &id, &used_len) || id != 0)
		return BLK_BAD_DEVICE;
	return used_len < len ? used_len : len;
}
