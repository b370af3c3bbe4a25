/*
 * virtqueue.c: a split virtqueue (virtio 1.1 §2.6), driver side, polled.
 *
 * The rings live in guest RAM that the caller zeroed. Completions are
 * polled, never signalled: without VIRTIO_RING_F_EVENT_IDX the driver sets
 * VIRTQ_AVAIL_F_NO_INTERRUPT; with it, used_event is kept half the index
 * space ahead of what was consumed, so the device never needs to interrupt.
 * Notifications follow the device's wishes (VIRTQ_USED_F_NO_NOTIFY, or
 * avail_event with EVENT_IDX), which spares VM exits while it is busy.
 */
#include "virtio.h"

#define VIRTQ_AVAIL_F_NO_INTERRUPT	1
#define VIRTQ_USED_F_NO_NOTIFY		1

static volatile uint16_t *used_event(struct virtq *vq)
{
	return &vq->avail->ring[vq->size];
}

static uint16_t avail_event(struct virtq *vq)
{
	uintptr_t at = (uintptr_t)&vq->used->ring[vq->size];

	return *(volatile uint16_t *)at;
}

/* virtio 1.1 §2.6.7.2: whether moving the index from old to new_idx
 * passed the event index. */
static bool need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
	return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

void virtq_init(struct virtq *vq, uint64_t area, uint16_t size, bool event_idx,
		volatile uint32_t *notify, uint16_t index)
{
	vq->desc = (volatile struct virtq_desc *)(uintptr_t)(area + VQ_DESC_OFFSET);
	vq->avail = (volatile struct virtq_avail *)(uintptr_t)(area + VQ_AVAIL_OFFSET);
	vq->used = (volatile struct virtq_used *)(uintptr_t)(area + VQ_USED_OFFSET);
	vq->notify = notify;
	vq->index = index;
	vq->size = size;
	vq->avail_idx = 0;
	vq->kicked_idx = 0;
	vq->last_used = 0;
	vq->event_idx = event_idx;
	if (event_idx)
		*used_event(vq) = 0x7fff;
	else
		vq->avail->flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
}

void virtq_set_desc(struct virtq *vq, uint16_t i, uint64_t addr, uint32_t len,
		    uint16_t flags, uint16_t next)
{
	volatile struct virtq_desc *d = &vq->desc[i];

	d->addr = addr;
	d->len = len;
	d->flags = flags;
	d->next = next;
}

void virtq_push(struct virtq *vq, uint16_t head)
{
	vq->avail->ring[vq->avail_idx & (vq->size - 1)] = head;
	vq->avail_idx++;
}

void virtq_kick(struct virtq *vq)
{
	uint16_t old = vq->kicked_idx, new_idx = vq->avail_idx;
	bool notify;

	if (new_idx == old)
		return;
	/* Descriptors and ring entries before the index that publishes them. */
	virtio_barrier();
	vq->avail->idx = new_idx;
	vq->kicked_idx = new_idx;
	/* The index must be visible before we read whether the device wants
	 * a notification, or we could both miss each other. */
	virtio_mb();
	if (vq->event_idx)
		notify = need_event(avail_event(vq), new_idx, old);
	else
		notify = !(vq->used->flags & VIRTQ_USED_F_NO_NOTIFY);
	if (notify)
		*vq->notify = vq->index;
}

bool virtq_pop_used(struct virtq *vq, uint32_t *id, uint32_t *len)
{
	volatile struct virtq_used_elem *e;

	if (vq->used->idx == vq->last_used)
		return false;
	/* Read the element only after seeing the index that covers it. */
	virtio_barrier();
	e = &vq->used->ring[vq->last_used & (vq->size - 1)];
	*id = e->id;
	*len = e->len;
	vq->last_used++;
	if (vq->event_idx)
		*used_event(vq) = (uint16_t)(vq->last_used + 0x7fff);
	return true;
}

bool virtq_wait_used(struct virtq *vq)
{
	for (unsigned long i = 0; i < VIRTIO_WAIT_SPINS; i++) {
		if (vq->used->idx != vq->last_used)
			return true;
		cpu_relax();
	}
	return false;
}
