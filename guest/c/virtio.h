/*
 * virtio.h: the test guest's virtio-mmio driver (virtio 1.1, MMIO version 2,
 * split virtqueues), shared by virtio_mmio.c (transport), virtqueue.c,
 * virtio_blk.c, virtio_rng.c, virtio_net.c, bench.c and virtio_cmd.c (the
 * actions).
 *
 * Everything runs in ring 3 with interrupts off: the driver notifies a
 * queue by writing QueueNotify (one VM exit) and polls the used ring for
 * completions, with a bounded wait.
 *
 * Driver memory is a fixed region of guest RAM (physical == virtual), not
 * part of the image, so that booting the guest touches none of it:
 *
 *   0x0040_0000  VIRTIO_DEV_AREA_SIZE per device (rings, request headers)
 *   0x0042_0000  VIRTIO_DEV_AREA_SIZE per device for queue 1 (net transmit)
 *   0x0048_0000  the 64 KiB I/O buffer of the single-request actions
 *   0x0050_0000  the benchmark buffers, 64 x 64 KiB; the network driver
 *                uses the first 1 MiB of them (receive, then transmit
 *                buffers, 256 x 2 KiB each), then net-tso's transmit
 *                buffers (NET_TSO_SLOTS x 68 KiB)
 *   0x0090_0000  the vsock driver's queues 1 and 2 and its buffers, 1 MiB
 *   0x00a0_0000  end
 *
 * link.ld checks that the image ends below VIRTIO_RAM_START.
 */
#ifndef KINDLING_VIRTIO_H
#define KINDLING_VIRTIO_H

#include "guest.h"

#define VIRTIO_MAX_DEVICES	8

#define VIRTIO_RAM_START	0x400000UL
#define VIRTIO_DEV_AREA_SIZE	0x4000UL	/* 16 KiB per device */
#define VIRTIO_DEV_AREA1	0x420000UL	/* queue 1's areas */
#define VIRTIO_IO_BUF		0x480000UL
#define VIRTIO_IO_BUF_SIZE	0x10000UL
#define BENCH_BUF_START		0x500000UL
#define BENCH_BUF_SIZE		0x10000UL	/* per request slot */
#define BENCH_MAX_QD		64
#define VSOCK_RAM_START		(BENCH_BUF_START + BENCH_MAX_QD * BENCH_BUF_SIZE)
#define VSOCK_RAM_SIZE		0x100000UL
#define VIRTIO_RAM_END		(VSOCK_RAM_START + VSOCK_RAM_SIZE)
#define NET_BUF_SIZE		2048UL
#define NET_RX_BUFS		BENCH_BUF_START
#define NET_TX_BUFS		(BENCH_BUF_START + VQ_MAX_SIZE * NET_BUF_SIZE)
#define NET_TSO_BUFS		(NET_TX_BUFS + VQ_MAX_SIZE * NET_BUF_SIZE)
#define NET_TSO_BUF_SIZE	0x11000UL	/* the header and a 64 KiB frame */
#define NET_TSO_SLOTS		32

/* Inside a device's area. */
#define VQ_DESC_OFFSET		0x0000	/* 16 * 256 bytes */
#define VQ_AVAIL_OFFSET		0x1000	/* 4 + 2 * 256 + 2 */
#define VQ_USED_OFFSET		0x2000	/* 4 + 8 * 256 + 2 */
#define VIRTIO_PRIV_OFFSET	0x3000	/* 4 KiB for the device's driver */
#define VQ_MAX_SIZE		256

/* Device ids (virtio 1.1 §5). */
#define VIRTIO_ID_NET		1
#define VIRTIO_ID_BLOCK		2
#define VIRTIO_ID_RNG		4
#define VIRTIO_ID_VSOCK		19

/* Feature bits. */
#define VIRTIO_F_VERSION_1		32
#define VIRTIO_RING_F_EVENT_IDX		29
#define VIRTIO_BLK_F_RO			5
#define VIRTIO_BLK_F_FLUSH		9
#define VIRTIO_BLK_F_DISCARD		13
#define VIRTIO_BLK_F_WRITE_ZEROES	14
#define VIRTIO_NET_F_CSUM		0
#define VIRTIO_NET_F_GUEST_CSUM		1
#define VIRTIO_NET_F_MAC		5
#define VIRTIO_NET_F_GUEST_TSO4		7
#define VIRTIO_NET_F_HOST_TSO4		11
#define VIRTIO_NET_F_MRG_RXBUF		15
#define FEATURE(bit)			(1ULL << (bit))

/* Wait bound for a device: `pause` iterations (about 3 s on the
 * development hosts, where one `pause` takes about 29 ns). */
#define VIRTIO_WAIT_SPINS	100000000UL

/* Orders memory accesses against the device (another thread on the host).
 * x86 keeps stores in order and loads in order: only a store followed by
 * a load needs a fence. */
static inline void virtio_barrier(void)
{
	__asm__ volatile("" ::: "memory");
}

static inline void virtio_mb(void)
{
	__asm__ volatile("mfence" ::: "memory");
}

/* ---- virtqueue.c: one split virtqueue (virtio 1.1 §2.6) --------------- */

#define VIRTQ_DESC_F_NEXT	1
#define VIRTQ_DESC_F_WRITE	2	/* the device writes this buffer */

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct virtq_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[];	/* then uint16_t used_event */
};

struct virtq_used_elem {
	uint32_t id;
	uint32_t len;
};

struct virtq_used {
	uint16_t flags;
	uint16_t idx;
	struct virtq_used_elem ring[];	/* then uint16_t avail_event */
};

struct virtq {
	volatile struct virtq_desc *desc;
	volatile struct virtq_avail *avail;
	volatile struct virtq_used *used;
	volatile uint32_t *notify;	/* the QueueNotify register */
	uint16_t index;			/* the queue's number */
	uint16_t size;			/* a power of two, at most VQ_MAX_SIZE */
	uint16_t avail_idx;		/* next free avail slot (not yet published) */
	uint16_t kicked_idx;		/* avail idx at the last kick */
	uint16_t last_used;		/* next used element to read */
	bool event_idx;			/* VIRTIO_RING_F_EVENT_IDX negotiated */
};

/* Lays the rings out in the (zeroed) area at `area`. */
void virtq_init(struct virtq *vq, uint64_t area, uint16_t size, bool event_idx,
		volatile uint32_t *notify, uint16_t index);
void virtq_set_desc(struct virtq *vq, uint16_t i, uint64_t addr, uint32_t len,
		    uint16_t flags, uint16_t next);
/* Makes the chain starting at `head` available (published at the kick). */
void virtq_push(struct virtq *vq, uint16_t head);
/* Publishes what was pushed and notifies the device if it wants to be. */
void virtq_kick(struct virtq *vq);
/* Takes the next used element; false if there is none. */
bool virtq_pop_used(struct virtq *vq, uint32_t *id, uint32_t *len);
/* Waits (bounded) until a used element is there; false on timeout. */
bool virtq_wait_used(struct virtq *vq);

/* ---- virtio_mmio.c: the transport (virtio 1.1 §4.2.2) ----------------- */

enum virtio_state {
	VIRTIO_OK,		/* initialised, DRIVER_OK set */
	VIRTIO_BAD_MAGIC,
	VIRTIO_BAD_VERSION,
	VIRTIO_NO_DRIVER,	/* a device type this guest has no driver for */
	VIRTIO_INIT_FAILED,	/* "virtio<i>: init failed: ..." was printed */
};

struct virtio_dev {
	uint64_t base;		/* of the MMIO window */
	uint64_t size;
	uint32_t irq;
	uint32_t device_id;	/* as read, even when the magic is wrong */
	enum virtio_state state;
	uint32_t status;	/* device status bits we last wrote */
	uint64_t features;	/* negotiated */
	uint64_t area;		/* its VIRTIO_DEV_AREA_SIZE bytes of RAM */
	struct virtq vq;	/* queue 0 */
	struct virtq vq1;	/* queue 1 (network devices: transmit) */
};

/* Probes and initialises every device of the command line, once; prints
 * "virtio<i>: init failed: <reason>" for each one that fails. */
void virtio_probe_all(uint64_t zero_page);
unsigned virtio_count(void);
struct virtio_dev *virtio_get(unsigned i);
/* Whether queue 0 uses VIRTIO_RING_F_EVENT_IDX when the device offers it
 * (kindling.event_idx=); must be set before probing. */
void virtio_set_event_idx(bool accept);
/* 32-bit aligned read of the device-specific configuration. */
uint32_t virtio_config_read32(struct virtio_dev *d, unsigned offset);
/* A 64-bit configuration field, read consistently (ConfigGeneration). */
uint64_t virtio_config_read64(struct virtio_dev *d, unsigned offset);

/* Sets up queue `index` of `d` with its rings in the (RAM) area at `area`
 * (the VQ_*_OFFSET layout, 12 KiB); NULL or why it failed. Queue 0 is set
 * up by the probe; drivers of devices with more queues call this from
 * their setup hook, before DRIVER_OK. */
const char *virtio_setup_queue(struct virtio_dev *d, uint16_t index, struct virtq *vq,
			       uint64_t area, uint16_t min_size);

/* ---- virtio_blk.c ----------------------------------------------------- */

#define VIRTIO_BLK_T_IN			0
#define VIRTIO_BLK_T_OUT		1
#define VIRTIO_BLK_T_FLUSH		4
#define VIRTIO_BLK_T_GET_ID		8
#define VIRTIO_BLK_T_DISCARD		11
#define VIRTIO_BLK_T_WRITE_ZEROES	13

#define VIRTIO_BLK_S_OK		0
#define VIRTIO_BLK_S_IOERR	1
#define VIRTIO_BLK_S_UNSUPP	2
#define VIRTIO_BLK_S_NONE	0xff	/* what we put there before submitting */

#define VIRTIO_BLK_ID_BYTES	20
#define BLK_MAX_SLOTS		85	/* 3 descriptors each in 256 */

/* Results of blk_do other than a status byte. */
#define BLK_TIMEOUT		(-1)
#define BLK_BAD_DEVICE		(-2)	/* a used element we did not submit */

struct virtio_blk_req_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

struct blk_dev {
	struct virtio_dev *dev;
	uint64_t capacity;	/* in 512-byte sectors */
	uint16_t slots;		/* requests that fit in the queue at once */
	volatile struct virtio_blk_req_hdr *hdr;	/* [slots] */
	volatile uint8_t *status;			/* [slots] */
	uint8_t *misc;		/* 64 bytes: discard segment */
	bool busy[BLK_MAX_SLOTS];
};

/* Feature bits the block driver accepts. */
uint64_t virtio_blk_features(void);
/* Registers an initialised block device (called in probe order). */
void virtio_blk_attach(struct virtio_dev *d);
/* Counts every block device, ready or not, in command-line order. */
void virtio_blk_count_device(struct virtio_dev *d);
unsigned blk_count(void);
struct blk_dev *blk_get(unsigned index);
bool blk_ready(const struct blk_dev *b);

/* Request slot i uses descriptors 3i (header), 3i+1 (data), 3i+2 (status).
 * data_len 0 means no data descriptor. */
void blk_prepare(struct blk_dev *b, uint16_t slot, uint32_t type, uint64_t sector,
		 uint64_t data, uint32_t data_len, bool device_writes);
void blk_submit(struct blk_dev *b, uint16_t slot);
void blk_kick(struct blk_dev *b);
/* Takes one completed request: 1 and *slot, 0 if none, BLK_BAD_DEVICE. */
int blk_reap(struct blk_dev *b, uint16_t *slot);
/* One request in slot 0, waited for: its status byte, BLK_TIMEOUT or
 * BLK_BAD_DEVICE. */
int blk_do(struct blk_dev *b, uint32_t type, uint64_t sector, uint64_t data,
	   uint32_t data_len, bool device_writes);

/* ---- virtio_rng.c ----------------------------------------------------- */

/* The first initialised-or-not entropy device, in command-line order. */
void virtio_rng_count_device(struct virtio_dev *d);
struct virtio_dev *rng_first(void);
/* One request for len bytes at buf: bytes written (>= 0), BLK_TIMEOUT or
 * BLK_BAD_DEVICE. */
int64_t rng_read(struct virtio_dev *d, uint64_t buf, uint32_t len);

/* ---- virtio_vsock.c --------------------------------------------------- */

/* Queue 0 (RX) must hold the receive buffers. */
#define VSOCK_MIN_QUEUE		16

void virtio_vsock_count_device(struct virtio_dev *d);
/* Sets up queues 1 (TX) and 2 (event) during initialisation. */
const char *virtio_vsock_setup_queues(struct virtio_dev *d);
/* Posts the receive and event buffers once the device is live. */
void virtio_vsock_attach(struct virtio_dev *d);
/* The first vsock device, initialised or not (NULL: none). */
struct virtio_dev *vsock_first(void);
/* The actions `vsock-connect:PORT:N` and `vsock-listen:PORT` on an
 * initialised device: they print their line, or end the VM with
 * EXIT_DEVICE_ERROR when the device stalls. */
void vsock_connect(struct virtio_dev *d, uint32_t port, uint64_t bytes);
void vsock_listen(struct virtio_dev *d, uint32_t port);

/* ---- virtio_net.c ----------------------------------------------------- */

#define VIRTIO_NET_HDR_F_NEEDS_CSUM	1
#define VIRTIO_NET_HDR_GSO_TCPV4	1
#define NET_HDR_LEN			12
#define NET_MAX_FRAME			(NET_BUF_SIZE - NET_HDR_LEN)
#define NET_TSO_MAX_FRAME		65536	/* the device's largest */

struct virtio_net_hdr {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len;
	uint16_t gso_size;
	uint16_t csum_start;
	uint16_t csum_offset;
	uint16_t num_buffers;
};

/* Feature bits the network driver accepts. */
uint64_t virtio_net_features(void);
/* Whether the device needs queue 1 (a network device). */
void virtio_net_count_device(struct virtio_dev *d);
/* Posts every receive buffer of the first network device. */
void virtio_net_attach(struct virtio_dev *d);
/* The first network device, initialised or not (NULL: none). */
struct virtio_dev *net_first(void);
/* The MAC address: the device's (VIRTIO_NET_F_MAC) or 02:00:00:00:00:01. */
void net_mac(uint8_t mac[6]);
/* The next free transmit buffer (header first), after reclaiming sent
 * ones; NULL on timeout. */
uint8_t *net_tx_buffer(void);
/* Queues the buffer net_tx_buffer returned, `len` bytes with the header;
 * publishes it to the device now if `kick` (otherwise at the next kick,
 * net_tx_drain, or when the queue is full). */
void net_tx_submit(uint32_t len, bool kick);
/* The next free TSO transmit buffer (NET_TSO_BUF_SIZE bytes, header
 * first), after waiting until fewer than NET_TSO_SLOTS buffers are in
 * flight; NULL on timeout. Buffer i serves descriptor i mod
 * NET_TSO_SLOTS: the device returns transmit buffers in order, so the
 * one handed out is not in flight. */
uint8_t *net_tx_tso_buffer(void);
/* net_tx_submit for the buffer net_tx_tso_buffer returned. */
void net_tx_tso_submit(uint32_t len, bool kick);
/* Waits (bounded) for a received frame and copies it, header first, to
 * `dst` (at most `cap` bytes): its length, 0 if it did not fit (dropped),
 * BLK_TIMEOUT or BLK_BAD_DEVICE. */
int64_t net_recv(uint8_t *dst, uint32_t cap);
/* Publishes what was queued and waits (bounded) until every frame sent
 * was returned; false on timeout. */
bool net_tx_drain(void);

/* ---- bench.c ---------------------------------------------------------- */

enum bench_mode { BENCH_RANDREAD, BENCH_SEQREAD, BENCH_RANDWRITE, BENCH_SEQWRITE };

struct bench_params {
	enum bench_mode mode;
	uint32_t block_size;	/* bytes, a multiple of 512, <= 64 KiB */
	uint16_t queue_depth;	/* 1..min(BENCH_MAX_QD, slots) */
	uint64_t ops;
};

/* Runs the benchmark and prints its two lines; exits on a device error. */
void blk_bench(struct blk_dev *b, unsigned index, const struct bench_params *p);

/* ---- virtio_cmd.c ----------------------------------------------------- */

/* Prints "blk<D>: timeout" (or "... bad used id") and exits with status 3. */
__attribute__((noreturn)) void blk_device_failed(unsigned index, int result);

#endif /* KINDLING_VIRTIO_H */
