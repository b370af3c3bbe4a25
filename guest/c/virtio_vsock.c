/*
 * virtio_vsock.c: a minimal virtio-vsock driver (virtio 1.2 §5.10), one
 * stream connection at a time, polled like the others.
 *
 * Queue 0 (RX) holds RX_BUFS device-writable buffers of RX_BUF_SIZE bytes
 * (header and payload in one descriptor, descriptor i = buffer i); queue 1
 * (TX) has TX_SLOTS slots of two descriptors (header, payload); queue 2
 * (event) has EVQ_BUFS 8-byte buffers. Queues 1 and 2, the buffers and the
 * echo ring live at VSOCK_RAM_START (see virtio.h):
 *
 *   +0x00000  TX queue rings        +0x04000  event queue rings
 *   +0x08000  TX headers            +0x09000  event buffers
 *   +0x10000  RX buffers            +0x90000  TX payloads
 *   +0xe0000  the echo ring of vsock-listen
 *
 * Flow control follows §5.10.6.3: every packet carries our buf_alloc
 * (BUF_ALLOC) and fwd_cnt (bytes we have consumed); we send no more than
 * the peer's buf_alloc - (tx_cnt - peer_fwd_cnt), and send a
 * CREDIT_UPDATE when we have consumed half our buffer since the peer last
 * heard about it.
 */
#include "virtio.h"

#define HOST_CID		2
#define TYPE_STREAM		1

#define OP_REQUEST		1
#define OP_RESPONSE		2
#define OP_RST			3
#define OP_SHUTDOWN		4
#define OP_RW			5
#define OP_CREDIT_UPDATE	6
#define OP_CREDIT_REQUEST	7

#define EVENT_TRANSPORT_RESET	0

#define SHUTDOWN_BOTH		3
#define SHUTDOWN_SEND		2

#define RX_BUFS			64
#define RX_BUF_SIZE		8192UL
#define TX_SLOTS		16
#define TX_DATA_MAX		16384UL
#define EVQ_BUFS		8
#define BUF_ALLOC		0x10000U	/* = the echo ring */
#define FIRST_LOCAL_PORT	49152

#define TXQ_AREA		(VSOCK_RAM_START + 0x00000UL)
#define EVQ_AREA		(VSOCK_RAM_START + 0x04000UL)
#define TX_HDRS			(VSOCK_RAM_START + 0x08000UL)
#define EV_BUFS			(VSOCK_RAM_START + 0x09000UL)
#define RX_BUFS_AT		(VSOCK_RAM_START + 0x10000UL)
#define TX_DATA			(VSOCK_RAM_START + 0x90000UL)
#define ECHO_RING		(VSOCK_RAM_START + 0xe0000UL)

struct vsock_hdr {
	uint64_t src_cid;
	uint64_t dst_cid;
	uint32_t src_port;
	uint32_t dst_port;
	uint32_t len;
	uint16_t type;
	uint16_t op;
	uint32_t flags;
	uint32_t buf_alloc;
	uint32_t fwd_cnt;
} __attribute__((packed));

_Static_assert(sizeof(struct vsock_hdr) == 44, "virtio_vsock_hdr is 44 bytes");

struct conn {
	uint32_t local_port;
	uint32_t peer_port;
	uint32_t peer_buf_alloc;
	uint32_t peer_fwd_cnt;
	uint32_t tx_cnt;		/* payload bytes sent */
	uint32_t fwd_cnt;		/* payload bytes consumed */
	uint32_t fwd_cnt_told;		/* fwd_cnt in the last packet sent */
	bool peer_done_sending;		/* SHUTDOWN with SEND received */
	bool reset;			/* RST received, or a transport reset */
	uint32_t resets_seen;		/* transport_resets when it began */
};

static struct virtio_dev *first_vsock;
static struct virtq txq, evq;
static uint64_t guest_cid;
static bool tx_busy[TX_SLOTS];
static uint16_t rx_posted;
static uint32_t next_local_port = FIRST_LOCAL_PORT;
static uint32_t transport_resets;	/* VIRTIO_VSOCK_EVENT_TRANSPORT_RESET seen */

void virtio_vsock_count_device(struct virtio_dev *d)
{
	if (!first_vsock)
		first_vsock = d;
}

struct virtio_dev *vsock_first(void)
{
	return first_vsock;
}

const char *virtio_vsock_setup_queues(struct virtio_dev *d)
{
	const char *err;

	if (d != first_vsock)
		return "a second vsock device";
	err = virtio_setup_queue(d, 1, &txq, TXQ_AREA, 2 * TX_SLOTS);
	if (err)
		return err;
	return virtio_setup_queue(d, 2, &evq, EVQ_AREA, EVQ_BUFS);
}

void virtio_vsock_attach(struct virtio_dev *d)
{
	struct virtq *rxq = &d->vq;

	guest_cid = virtio_config_read64(d, 0);
	rx_posted = rxq->size < RX_BUFS ? rxq->size : RX_BUFS;
	for (uint16_t i = 0; i < rx_posted; i++) {
		virtq_set_desc(rxq, i, RX_BUFS_AT + i * RX_BUF_SIZE, RX_BUF_SIZE,
			       VIRTQ_DESC_F_WRITE, 0);
		virtq_push(rxq, i);
	}
	virtq_kick(rxq);
	for (uint16_t i = 0; i < EVQ_BUFS; i++) {
		virtq_set_desc(&evq, i, EV_BUFS + i * 8, 8, VIRTQ_DESC_F_WRITE, 0);
		virtq_push(&evq, i);
	}
	virtq_kick(&evq);
}

/* ---- the event queue -------------------------------------------------- */

/* Takes the device's events and reposts their buffers. The only event, a
 * transport reset (after a snapshot restore), means the device dropped
 * every connection: it is counted and printed, and the connection in
 * progress ends as reset (conn_reset). */
static void poll_events(void)
{
	uint32_t id, len;

	while (virtq_pop_used(&evq, &id, &len)) {
		if (id >= EVQ_BUFS)
			continue;
		if (len >= 4 && *(volatile uint32_t *)(EV_BUFS + id * 8UL) == EVENT_TRANSPORT_RESET) {
			transport_resets++;
			out_str("vsock: transport reset");
			out_line();
		}
		virtq_push(&evq, (uint16_t)id);
	}
	virtq_kick(&evq);
}

/* Whether c was reset: by an RST, or by a transport reset since it began. */
static bool conn_reset(struct conn *c)
{
	if (c->resets_seen != transport_resets)
		c->reset = true;
	return c->reset;
}

/* ---- sending ---------------------------------------------------------- */

static void reap_tx(void)
{
	uint32_t id, len;

	while (virtq_pop_used(&txq, &id, &len)) {
		if (id % 2 == 0 && id / 2 < TX_SLOTS)
			tx_busy[id / 2] = false;
	}
}

/* A free TX slot, or -1. */
static int free_slot(void)
{
	reap_tx();
	for (int i = 0; i < TX_SLOTS; i++) {
		if (!tx_busy[i])
			return i;
	}
	return -1;
}

static __attribute__((noreturn)) void stalled(const char *what)
{
	out_str("vsock: timeout ");
	out_str(what);
	out_line();
	guest_exit(EXIT_DEVICE_ERROR);
}

/* Waits (bounded) for a free TX slot. */
static int tx_reserve(void)
{
	unsigned long spins = 0;
	int slot;

	while ((slot = free_slot()) < 0) {
		if (++spins == VIRTIO_WAIT_SPINS)
			stalled("sending");
		cpu_relax();
	}
	return slot;
}

/* The payload buffer of TX slot `slot`. */
static uint8_t *tx_data(int slot)
{
	return (uint8_t *)(TX_DATA + (uint64_t)slot * TX_DATA_MAX);
}

/* Sends a packet from reserved slot `slot` whose payload (len bytes) is
 * already in tx_data(slot). */
static void tx_submit(struct conn *c, int slot, uint16_t op, uint32_t flags, uint32_t len)
{
	volatile struct vsock_hdr *h = (volatile struct vsock_hdr *)(TX_HDRS + (uint64_t)slot * 64);

	h->src_cid = guest_cid;
	h->dst_cid = HOST_CID;
	h->src_port = c->local_port;
	h->dst_port = c->peer_port;
	h->len = len;
	h->type = TYPE_STREAM;
	h->op = op;
	h->flags = flags;
	h->buf_alloc = BUF_ALLOC;
	h->fwd_cnt = c->fwd_cnt;
	c->fwd_cnt_told = c->fwd_cnt;
	if (len) {
		virtq_set_desc(&txq, (uint16_t)(2 * slot), (uint64_t)(uintptr_t)h,
			       sizeof(struct vsock_hdr), VIRTQ_DESC_F_NEXT, (uint16_t)(2 * slot + 1));
		virtq_set_desc(&txq, (uint16_t)(2 * slot + 1), (uint64_t)(uintptr_t)tx_data(slot),
			       len, 0, 0);
		c->tx_cnt += len;
	} else {
		virtq_set_desc(&txq, (uint16_t)(2 * slot), (uint64_t)(uintptr_t)h,
			       sizeof(struct vsock_hdr), 0, 0);
	}
	tx_busy[slot] = true;
	virtq_push(&txq, (uint16_t)(2 * slot));
	virtq_kick(&txq);
}

/* Sends a packet without payload. */
static void send_control(struct conn *c, uint16_t op, uint32_t flags)
{
	tx_submit(c, tx_reserve(), op, flags, 0);
}

static uint32_t peer_credit(const struct conn *c)
{
	uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;

	return in_flight > c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

/* Tells the peer about consumed data once half the buffer is free again. */
static void maybe_credit_update(struct conn *c)
{
	if (c->fwd_cnt - c->fwd_cnt_told >= BUF_ALLOC / 2)
		send_control(c, OP_CREDIT_UPDATE, 0);
}

/* ---- receiving -------------------------------------------------------- */

struct rx_packet {
	volatile struct vsock_hdr *h;
	const uint8_t *data;
	uint32_t len;
	uint16_t id;
};

/* Takes the next received packet; false if there is none. */
static bool rx_take(struct virtio_dev *d, struct rx_packet *p)
{
	uint32_t id, len;

	poll_events();
	while (virtq_pop_used(&d->vq, &id, &len)) {
		if (id >= rx_posted)
			continue;	/* not ours: cannot repost it */
		p->id = (uint16_t)id;
		p->h = (volatile struct vsock_hdr *)(RX_BUFS_AT + id * RX_BUF_SIZE);
		p->data = (const uint8_t *)(RX_BUFS_AT + id * RX_BUF_SIZE + sizeof(struct vsock_hdr));
		p->len = p->h->len;
		if (len < sizeof(struct vsock_hdr) || p->len > len - sizeof(struct vsock_hdr)) {
			virtq_push(&d->vq, p->id);	/* malformed: dropped */
			continue;
		}
		return true;
	}
	virtq_kick(&d->vq);
	return false;
}

/* Gives the buffer back; it is published (one notification at most) when
 * rx_take finds nothing more to read. */
static void rx_done(struct virtio_dev *d, const struct rx_packet *p)
{
	virtq_push(&d->vq, p->id);
}

/* Handles the control part of a packet for connection c: credit, RST,
 * SHUTDOWN, CREDIT_REQUEST. Returns whether it belongs to c. */
static bool rx_control(struct conn *c, const struct rx_packet *p)
{
	volatile struct vsock_hdr *h = p->h;

	if (h->src_cid != HOST_CID || h->src_port != c->peer_port ||
	    h->dst_port != c->local_port)
		return false;
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	if (h->op == OP_RST)
		c->reset = true;
	else if (h->op == OP_SHUTDOWN && (h->flags & SHUTDOWN_SEND))
		c->peer_done_sending = true;
	else if (h->op == OP_CREDIT_REQUEST)
		send_control(c, OP_CREDIT_UPDATE, 0);
	return true;
}

/* Answers a packet for no connection of ours with a reset (unless it is
 * one). */
static void rx_stray(const struct rx_packet *p)
{
	struct conn other = {
		.local_port = p->h->dst_port,
		.peer_port = p->h->src_port,
	};

	if (p->h->op != OP_RST)
		send_control(&other, OP_RST, 0);
}

/* Waits (bounded) for the RST that ends a connection we shut down. */
static void wait_reset(struct virtio_dev *d, struct conn *c)
{
	struct rx_packet p;

	for (unsigned long spins = 0; !conn_reset(c) && spins < VIRTIO_WAIT_SPINS; spins++) {
		if (!rx_take(d, &p)) {
			cpu_relax();
			continue;
		}
		if (!rx_control(c, &p))
			rx_stray(&p);
		rx_done(d, &p);
	}
}

/* ---- the actions ------------------------------------------------------ */

/* Byte i of the test pattern. */
static uint8_t pattern(uint64_t i)
{
	return (uint8_t)(i * 31 + (i >> 12));
}

static void out_port_line(const char *what, uint32_t port)
{
	out_str("vsock: ");
	out_str(what);
	out_str(" port=");
	out_dec(port);
}

void vsock_connect(struct virtio_dev *d, uint32_t port, uint64_t bytes)
{
	struct conn c = {
		.local_port = next_local_port++,
		.peer_port = port,
		.resets_seen = transport_resets,
	};
	uint64_t sent = 0, received = 0, mismatches = 0;
	uint32_t crc = 0;
	unsigned long idle = 0;
	struct rx_packet p;
	bool established = false;

	send_control(&c, OP_REQUEST, 0);
	while (!established && !conn_reset(&c)) {
		if (!rx_take(d, &p)) {
			if (++idle == VIRTIO_WAIT_SPINS)
				stalled("connecting");
			cpu_relax();
			continue;
		}
		idle = 0;
		if (rx_control(&c, &p))
			established = p.h->op == OP_RESPONSE;
		else
			rx_stray(&p);
		rx_done(d, &p);
	}
	if (c.reset) {
		out_port_line("connect", port);
		out_str(" refused");
		out_line();
		return;
	}
	idle = 0;
	while (received < bytes && !conn_reset(&c) && !c.peer_done_sending) {
		bool progress = false;

		if (rx_take(d, &p)) {
			progress = true;
			if (!rx_control(&c, &p)) {
				rx_stray(&p);
			} else if (p.h->op == OP_RW) {
				for (uint32_t i = 0; i < p.len; i++)
					mismatches += p.data[i] != pattern(received + i);
				crc = crc32_update(crc, p.data, p.len);
				received += p.len;
				c.fwd_cnt += p.len;
			}
			rx_done(d, &p);
			maybe_credit_update(&c);
		}
		while (sent < bytes && peer_credit(&c) > 0 && free_slot() >= 0) {
			int slot = free_slot();
			uint8_t *out = tx_data(slot);
			uint64_t n = bytes - sent;

			if (n > TX_DATA_MAX)
				n = TX_DATA_MAX;
			if (n > peer_credit(&c))
				n = peer_credit(&c);
			for (uint64_t i = 0; i < n; i++)
				out[i] = pattern(sent + i);
			tx_submit(&c, slot, OP_RW, 0, (uint32_t)n);
			sent += n;
			progress = true;
		}
		if (progress) {
			idle = 0;
		} else {
			if (++idle == VIRTIO_WAIT_SPINS)
				stalled("transferring");
			cpu_relax();
		}
	}
	if (!c.reset) {
		send_control(&c, OP_SHUTDOWN, SHUTDOWN_BOTH);
		wait_reset(d, &c);
	}
	out_port_line("connect", port);
	out_str(" sent=");
	out_dec(sent);
	out_str(" received=");
	out_dec(received);
	out_str(" crc32=");
	out_hex(crc, 8);
	out_str(" mismatches=");
	out_dec(mismatches);
	out_line();
}

void vsock_listen(struct virtio_dev *d, uint32_t port)
{
	volatile uint8_t *ring = (volatile uint8_t *)ECHO_RING;
	struct conn c = { .local_port = port };
	uint64_t head = 0, tail = 0, overruns = 0;	/* ring positions */
	uint32_t crc = 0;
	unsigned long idle = 0;
	struct rx_packet p;
	bool accepted = false;

	/* The host connects when it likes: wait ten times longer. */
	while (!accepted) {
		if (!rx_take(d, &p)) {
			if (++idle == 10 * VIRTIO_WAIT_SPINS)
				stalled("listening");
			cpu_relax();
			continue;
		}
		if (p.h->op == OP_REQUEST && p.h->dst_port == port && p.h->src_cid == HOST_CID) {
			c.peer_port = p.h->src_port;
			c.peer_buf_alloc = p.h->buf_alloc;
			c.peer_fwd_cnt = p.h->fwd_cnt;
			c.resets_seen = transport_resets;
			accepted = true;
		} else {
			rx_stray(&p);
		}
		rx_done(d, &p);
	}
	send_control(&c, OP_RESPONSE, 0);
	idle = 0;
	while (!conn_reset(&c) && !(c.peer_done_sending && head == tail)) {
		bool progress = false;

		if (rx_take(d, &p)) {
			progress = true;
			if (!rx_control(&c, &p)) {
				rx_stray(&p);
			} else if (p.h->op == OP_RW) {
				crc = crc32_update(crc, p.data, p.len);
				for (uint32_t i = 0; i < p.len; i++) {
					if (head - tail == BUF_ALLOC) {
						overruns++;
						continue;
					}
					ring[head++ % BUF_ALLOC] = p.data[i];
				}
			}
			rx_done(d, &p);
		}
		while (head != tail && peer_credit(&c) > 0 && free_slot() >= 0) {
			int slot = free_slot();
			uint8_t *out = tx_data(slot);
			uint64_t n = head - tail;

			if (n > TX_DATA_MAX)
				n = TX_DATA_MAX;
			if (n > peer_credit(&c))
				n = peer_credit(&c);
			for (uint64_t i = 0; i < n; i++)
				out[i] = ring[(tail + i) % BUF_ALLOC];
			tail += n;
			c.fwd_cnt += (uint32_t)n;	/* consumed: room again */
			tx_submit(&c, slot, OP_RW, 0, (uint32_t)n);
			maybe_credit_update(&c);
			progress = true;
		}
		if (progress) {
			idle = 0;
		} else {
			if (++idle == VIRTIO_WAIT_SPINS)
				stalled("echoing");
			cpu_relax();
		}
	}
	if (!c.reset) {
		send_control(&c, OP_SHUTDOWN, SHUTDOWN_BOTH);
		wait_reset(d, &c);
	}
	out_port_line("listen", port);
	out_str(" echoed=");
	out_dec(tail);
	out_str(" crc32=");
	out_hex(crc, 8);
	out_str(" overruns=");
	out_dec(overruns);
	out_str(c.reset && !c.peer_done_sending ? " reset" : "");
	out_line();
}
