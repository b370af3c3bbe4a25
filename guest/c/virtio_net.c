/*
 * virtio_net.c: the virtio network driver (virtio 1.1 §5.1) for the first
 * network device: queue 0 receives, queue 1 transmits.
 *
 * Every buffer is one descriptor of NET_BUF_SIZE bytes, the 12-byte header
 * first: receive buffer i is descriptor i of queue 0 (all posted at
 * attach, re-posted as soon as a frame is copied out), transmit buffer i
 * descriptor i of queue 1 (used in turn; net-tso's larger buffers are
 * separate, see net_tx_tso_buffer). With VIRTIO_NET_F_MRG_RXBUF a
 * frame may span several receive buffers (num_buffers); without it, one
 * buffer holds a frame of at most NET_MAX_FRAME bytes.
 */
#include "virtio.h"

#define NET_CONFIG_MAC	0

static struct virtio_dev *first_net;
static uint16_t tx_next;	/* the next transmit buffer to use */
static uint16_t tx_in_flight;

uint64_t virtio_net_features(void)
{
	return FEATURE(VIRTIO_NET_F_MAC) | FEATURE(VIRTIO_NET_F_MRG_RXBUF) |
	       FEATURE(VIRTIO_NET_F_CSUM) | FEATURE(VIRTIO_NET_F_GUEST_CSUM) |
	       FEATURE(VIRTIO_NET_F_HOST_TSO4) | FEATURE(VIRTIO_NET_F_GUEST_TSO4) |
	       FEATURE(VIRTIO_RING_F_EVENT_IDX);
}

void virtio_net_count_device(struct virtio_dev *d)
{
	if (!first_net)
		first_net = d;
}

struct virtio_dev *net_first(void)
{
	return first_net;
}

static uint64_t rx_buf(uint16_t i)
{
	return NET_RX_BUFS + i * NET_BUF_SIZE;
}

static uint64_t tx_buf(uint16_t i)
{
	return NET_TX_BUFS + i * NET_BUF_SIZE;
}

void virtio_net_attach(struct virtio_dev *d)
{
	struct virtq *rx = &d->vq;

	if (d != first_net)
		return;
	for (uint16_t i = 0; i < rx->size; i++) {
		virtq_set_desc(rx, i, rx_buf(i), NET_BUF_SIZE, VIRTQ_DESC_F_WRITE, 0);
		virtq_push(rx, i);
	}
	virtq_kick(rx);
}

void net_mac(uint8_t mac[6])
{
	static const uint8_t fallback[6] = { 2, 0, 0, 0, 0, 1 };

	if (first_net && (first_net->features & FEATURE(VIRTIO_NET_F_MAC))) {
		uint32_t lo = virtio_config_read32(first_net, NET_CONFIG_MAC);
		uint32_t hi = virtio_config_read32(first_net, NET_CONFIG_MAC + 4);

		memcpy(mac, &lo, 4);
		memcpy(mac + 4, &hi, 2);
	} else {
		memcpy(mac, fallback, 6);
	}
}

/* Takes back the transmit buffers the device is done with. */
static int tx_reclaim(void)
{
	uint32_t id, len;

	while (virtq_pop_used(&first_net->vq1, &id, &len)) {
		if (tx_in_flight == 0 || id >= first_net->vq1.size)
			return BLK_BAD_DEVICE;
		tx_in_flight--;
	}
	return 0;
}

_Static_assert(NET_TSO_BUFS + NET_TSO_SLOTS * NET_TSO_BUF_SIZE <= VSOCK_RAM_START,
	       "net-tso's buffers overlap the vsock driver's");
_Static_assert(NET_HDR_LEN + NET_TSO_MAX_FRAME <= NET_TSO_BUF_SIZE,
	       "a TSO buffer holds the header and the largest frame");

static uint64_t tso_buf(uint16_t i)
{
	return NET_TSO_BUFS + (i % NET_TSO_SLOTS) * NET_TSO_BUF_SIZE;
}

/* Takes back sent buffers until fewer than `limit` are in flight; false
 * on timeout or a bad used element. */
static bool tx_wait_below(uint16_t limit)
{
	struct virtq *tx = &first_net->vq1;

	if (tx_reclaim() < 0)
		return false;
	if (tx_in_flight >= limit)
		virtq_kick(tx);	/* the device must see what waits */
	while (tx_in_flight >= limit) {
		if (!virtq_wait_used(tx) || tx_reclaim() < 0)
			return false;
	}
	return true;
}

uint8_t *net_tx_buffer(void)
{
	if (!tx_wait_below(first_net->vq1.size))
		return NULL;
	return (uint8_t *)(uintptr_t)tx_buf(tx_next);
}

uint8_t *net_tx_tso_buffer(void)
{
	uint16_t size = first_net->vq1.size;

	if (!tx_wait_below(size < NET_TSO_SLOTS ? size : NET_TSO_SLOTS))
		return NULL;
	return (uint8_t *)(uintptr_t)tso_buf(tx_next);
}

/* Queues `len` bytes at `addr` as transmit descriptor tx_next. */
static void tx_submit_at(uint64_t addr, uint32_t len, bool kick)
{
	struct virtq *tx = &first_net->vq1;

	virtq_set_desc(tx, tx_next, addr, len, 0, 0);
	virtq_push(tx, tx_next);
	tx_in_flight++;
	tx_next = (uint16_t)((tx_next + 1) % tx->size);
	if (kick)
		virtq_kick(tx);
}

void net_tx_submit(uint32_t len, bool kick)
{
	tx_submit_at(tx_buf(tx_next), len, kick);
}

void net_tx_tso_submit(uint32_t len, bool kick)
{
	tx_submit_at(tso_buf(tx_next), len, kick);
}

bool net_tx_drain(void)
{
	virtq_kick(&first_net->vq1);
	while (tx_in_flight) {
		if (!virtq_wait_used(&first_net->vq1) || tx_reclaim() < 0)
			return false;
	}
	return true;
}

/* Takes one used receive buffer: its id, or a negative error. */
static int64_t rx_take(uint32_t *len)
{
	struct virtq *rx = &first_net->vq;
	uint32_t id;

	if (!virtq_wait_used(rx))
		return BLK_TIMEOUT;
	if (!virtq_pop_used(rx, &id, len) || id >= rx->size)
		return BLK_BAD_DEVICE;
	if (*len > NET_BUF_SIZE)
		*len = NET_BUF_SIZE;
	return id;
}

static void rx_repost(uint16_t id)
{
	virtq_push(&first_net->vq, id);
	virtq_kick(&first_net->vq);
}

int64_t net_recv(uint8_t *dst, uint32_t cap)
{
	struct virtio_net_hdr hdr;
	uint32_t len, total = 0;
	uint16_t buffers;
	bool fits = true;
	int64_t id = rx_take(&len);

	if (id < 0)
		return id;
	if (len < NET_HDR_LEN) {
		rx_repost((uint16_t)id);
		return 0;
	}
	memcpy(&hdr, (const void *)(uintptr_t)rx_buf((uint16_t)id), NET_HDR_LEN);
	buffers = (first_net->features & FEATURE(VIRTIO_NET_F_MRG_RXBUF)) ? hdr.num_buffers : 1;
	for (uint16_t b = 0;;) {
		if (total + len > cap)
			fits = false;
		if (fits)
			memcpy(dst + total, (const void *)(uintptr_t)rx_buf((uint16_t)id), len);
		total += len;
		rx_repost((uint16_t)id);
		if (++b >= buffers)
			break;
		id = rx_take(&len);
		if (id < 0)
			return id;
	}
	return fits ? total : 0;
}
