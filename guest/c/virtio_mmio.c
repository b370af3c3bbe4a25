/*
 * virtio_mmio.c: the virtio-mmio transport, version 2 only (virtio 1.1
 * §4.2.2), and the device table built from the command line.
 *
 * Devices come from `virtio_mmio.device=<size>@<base>:<irq>[:<id>]` tokens
 * (Linux's syntax), in command-line order. The first virtio action probes
 * them all and initialises each one it has a driver for, once, following
 * §3.1.1: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK (checked),
 * queue 0 (and queue 1 for a network device), DRIVER_OK. Registers are
 * read and written 32 bits at a time, each access one VM exit.
 */
#include "virtio.h"

/* Control registers. */
#define REG_MAGIC		0x000
#define REG_VERSION		0x004
#define REG_DEVICE_ID		0x008
#define REG_DEVICE_FEATURES	0x010
#define REG_DEVICE_FEATURES_SEL	0x014
#define REG_DRIVER_FEATURES	0x020
#define REG_DRIVER_FEATURES_SEL	0x024
#define REG_QUEUE_SEL		0x030
#define REG_QUEUE_NUM_MAX	0x034
#define REG_QUEUE_NUM		0x038
#define REG_QUEUE_READY		0x044
#define REG_QUEUE_NOTIFY	0x050
#define REG_STATUS		0x070
#define REG_QUEUE_DESC_LOW	0x080
#define REG_QUEUE_DESC_HIGH	0x084
#define REG_QUEUE_DRIVER_LOW	0x090
#define REG_QUEUE_DRIVER_HIGH	0x094
#define REG_QUEUE_DEVICE_LOW	0x0a0
#define REG_QUEUE_DEVICE_HIGH	0x0a4
#define REG_CONFIG_GENERATION	0x0fc
#define REG_CONFIG		0x100

#define VIRTIO_MMIO_MAGIC	0x74726976	/* "virt" */
#define VIRTIO_MMIO_VERSION	2

/* Device status bits (§2.1). */
#define STATUS_ACKNOWLEDGE	1
#define STATUS_DRIVER		2
#define STATUS_DRIVER_OK	4
#define STATUS_FEATURES_OK	8
#define STATUS_NEEDS_RESET	64
#define STATUS_FAILED		128

#define RESET_READS		1000	/* reads of Status after a reset */
#define CONFIG_TRIES		16	/* re-reads on a configuration change */

static struct virtio_dev devices[VIRTIO_MAX_DEVICES];
static unsigned device_count;
static bool probed;
static bool event_idx_allowed = true;

/* ---- the command line ------------------------------------------------- */

/* Linux's memparse, the part that matters: a number with an optional
 * K/M/G suffix. */
static bool parse_size(struct span s, uint64_t *out)
{
	unsigned shift = 0;
	uint64_t v;

	if (s.n) {
		switch (s.p[s.n - 1]) {
		case 'k': case 'K': shift = 10; break;
		case 'm': case 'M': shift = 20; break;
		case 'g': case 'G': shift = 30; break;
		}
		if (shift)
			s.n--;
	}
	if (!parse_num(s, &v) || v > (UINT64_MAX >> shift))
		return false;
	*out = v << shift;
	return true;
}

static bool is_at(char c)
{
	return c == '@';
}

void virtio_mmio_cmdline_device(struct span value)
{
	struct span size_s = next_piece(&value, is_at);
	struct span base_s = next_piece(&value, is_colon);
	struct span irq_s = next_piece(&value, is_colon);
	uint64_t size, base, irq, id;
	struct virtio_dev *d;

	/* What is left is the optional platform-device id, which we ignore. */
	if (device_count >= VIRTIO_MAX_DEVICES || probed)
		return;
	if (!parse_size(size_s, &size) || !parse_num(base_s, &base) ||
	    !parse_dec(irq_s, &irq) || irq > UINT32_MAX ||
	    (value.n && !parse_dec(value, &id)))
		return;
	/* The registers must fit, 4-byte aligned, inside our identity map. */
	if (size < REG_CONFIG || base % 4 || !phys_range_mapped(base, size))
		return;
	d = &devices[device_count++];
	d->base = base;
	d->size = size;
	d->irq = (uint32_t)irq;
}

void virtio_set_event_idx(bool accept)
{
	event_idx_allowed = accept;
}

unsigned virtio_count(void)
{
	return device_count;
}

struct virtio_dev *virtio_get(unsigned i)
{
	return i < device_count ? &devices[i] : NULL;
}

/* ---- registers -------------------------------------------------------- */

static volatile uint32_t *reg(struct virtio_dev *d, unsigned offset)
{
	return (volatile uint32_t *)(uintptr_t)(d->base + offset);
}

static uint32_t reg_read(struct virtio_dev *d, unsigned offset)
{
	return *reg(d, offset);
}

static void reg_write(struct virtio_dev *d, unsigned offset, uint32_t value)
{
	*reg(d, offset) = value;
}

uint32_t virtio_config_read32(struct virtio_dev *d, unsigned offset)
{
	if (REG_CONFIG + (uint64_t)offset + 4 > d->size)
		return 0;
	return reg_read(d, REG_CONFIG + offset);
}

uint64_t virtio_config_read64(struct virtio_dev *d, unsigned offset)
{
	uint32_t gen, lo = 0, hi = 0;

	for (unsigned i = 0; i < CONFIG_TRIES; i++) {
		gen = reg_read(d, REG_CONFIG_GENERATION);
		lo = virtio_config_read32(d, offset);
		hi = virtio_config_read32(d, offset + 4);
		if (reg_read(d, REG_CONFIG_GENERATION) == gen)
			break;
	}
	return (uint64_t)hi << 32 | lo;
}

/* ---- initialisation --------------------------------------------------- */

/* Adds bits to the status we last wrote (saves reading it back: an exit). */
static void set_status(struct virtio_dev *d, uint32_t bits)
{
	d->status |= bits;
	reg_write(d, REG_STATUS, d->status);
}

static void write_addr(struct virtio_dev *d, unsigned low_reg, uint64_t addr)
{
	reg_write(d, low_reg, (uint32_t)addr);
	reg_write(d, low_reg + 4, (uint32_t)(addr >> 32));
}

/* The largest power of two <= n (n > 0). */
static uint16_t pow2_floor(uint32_t n)
{
	uint32_t p = 1;

	while (p * 2 <= n)
		p *= 2;
	return (uint16_t)p;
}

const char *virtio_setup_queue(struct virtio_dev *d, uint16_t index, struct virtq *vq,
			       uint64_t area, uint16_t min_size)
{
	uint32_t max;
	uint16_t size;

	reg_write(d, REG_QUEUE_SEL, index);
	if (reg_read(d, REG_QUEUE_READY) != 0)
		return index ? "queue already live" : "queue 0 already live";
	max = reg_read(d, REG_QUEUE_NUM_MAX);
	if (max == 0)
		return index ? "queue unavailable" : "queue 0 unavailable";
	size = pow2_floor(max < VQ_MAX_SIZE ? max : VQ_MAX_SIZE);
	if (size < min_size)
		return index ? "queue too small" : "queue 0 too small";
	memset((void *)(uintptr_t)area, 0, VQ_USED_OFFSET + 0x1000);
	virtq_init(vq, area, size,
		   (d->features & FEATURE(VIRTIO_RING_F_EVENT_IDX)) != 0,
		   reg(d, REG_QUEUE_NOTIFY), index);
	reg_write(d, REG_QUEUE_NUM, size);
	write_addr(d, REG_QUEUE_DESC_LOW, area + VQ_DESC_OFFSET);
	write_addr(d, REG_QUEUE_DRIVER_LOW, area + VQ_AVAIL_OFFSET);
	write_addr(d, REG_QUEUE_DEVICE_LOW, area + VQ_USED_OFFSET);
	reg_write(d, REG_QUEUE_READY, 1);
	return NULL;
}

static const char *setup_queue(struct virtio_dev *d, uint16_t min_size)
{
	memset((void *)(uintptr_t)d->area, 0, VIRTIO_DEV_AREA_SIZE);
	return virtio_setup_queue(d, 0, &d->vq, d->area, min_size);
}

/* §3.1.1, with queue 0 (and queue 1 if `queues` is 2; a vsock device sets
 * up its own queues 1 and 2). Returns NULL or why it failed. */
static const char *init_device(struct virtio_dev *d, uint64_t accepted,
			       uint16_t min_queue_size, unsigned queues)
{
	uint64_t offered;
	const char *err;
	unsigned i;

	d->status = 0;
	reg_write(d, REG_STATUS, 0);
	for (i = 0; i < RESET_READS && reg_read(d, REG_STATUS) != 0; i++)
		cpu_relax();
	if (i == RESET_READS)
		return "reset not acknowledged";
	set_status(d, STATUS_ACKNOWLEDGE);
	set_status(d, STATUS_DRIVER);

	reg_write(d, REG_DEVICE_FEATURES_SEL, 0);
	offered = reg_read(d, REG_DEVICE_FEATURES);
	reg_write(d, REG_DEVICE_FEATURES_SEL, 1);
	offered |= (uint64_t)reg_read(d, REG_DEVICE_FEATURES) << 32;
	if (!(offered & FEATURE(VIRTIO_F_VERSION_1)))
		return "no VIRTIO_F_VERSION_1";
	if (!event_idx_allowed)
		accepted &= ~FEATURE(VIRTIO_RING_F_EVENT_IDX);
	d->features = offered & (accepted | FEATURE(VIRTIO_F_VERSION_1));
	reg_write(d, REG_DRIVER_FEATURES_SEL, 0);
	reg_write(d, REG_DRIVER_FEATURES, (uint32_t)d->features);
	reg_write(d, REG_DRIVER_FEATURES_SEL, 1);
	reg_write(d, REG_DRIVER_FEATURES, (uint32_t)(d->features >> 32));
	set_status(d, STATUS_FEATURES_OK);
	if (!(reg_read(d, REG_STATUS) & STATUS_FEATURES_OK))
		return "features not accepted";

	err = setup_queue(d, min_queue_size);
	if (!err && queues > 1)
		err = virtio_setup_queue(d, 1, &d->vq1,
					 VIRTIO_DEV_AREA1 + (d->area - VIRTIO_RAM_START),
					 min_queue_size);
	if (!err && d->device_id == VIRTIO_ID_VSOCK)
		err = virtio_vsock_setup_queues(d);
	if (err)
		return err;
	set_status(d, STATUS_DRIVER_OK);
	if (reg_read(d, REG_STATUS) & (STATUS_NEEDS_RESET | STATUS_FAILED))
		return "device needs reset";
	return NULL;
}

/* Whether [VIRTIO_RAM_START, VIRTIO_RAM_END) is usable RAM in the E820 map. */
static bool driver_ram_ok(uint64_t zero_page)
{
	unsigned n = bootparams_e820_count(zero_page);

	for (unsigned i = 0; i < n; i++) {
		struct e820_entry e = bootparams_e820_entry(zero_page, i);

		if (e.type == 1 && e.addr <= VIRTIO_RAM_START &&
		    e.size >= VIRTIO_RAM_END - e.addr)
			return true;
	}
	return false;
}

static void init_failed(struct virtio_dev *d, unsigned index, const char *why)
{
	/* Tell the device we gave up (§3.1.1 step 8); harmless otherwise. */
	set_status(d, STATUS_FAILED);
	d->state = VIRTIO_INIT_FAILED;
	out_str("virtio");
	out_dec(index);
	out_str(": init failed: ");
	out_str(why);
	out_line();
}

void virtio_probe_all(uint64_t zero_page)
{
	bool ram_ok;

	if (probed)
		return;
	probed = true;
	ram_ok = driver_ram_ok(zero_page);
	for (unsigned i = 0; i < device_count; i++) {
		struct virtio_dev *d = &devices[i];
		uint32_t magic = reg_read(d, REG_MAGIC);
		uint32_t version = reg_read(d, REG_VERSION);
		uint64_t accepted;
		uint16_t min_queue;
		unsigned queues = 1;
		const char *err;

		d->device_id = reg_read(d, REG_DEVICE_ID);
		d->area = VIRTIO_RAM_START + i * VIRTIO_DEV_AREA_SIZE;
		if (magic != VIRTIO_MMIO_MAGIC) {
			d->state = VIRTIO_BAD_MAGIC;
			continue;
		}
		if (version != VIRTIO_MMIO_VERSION) {
			d->state = VIRTIO_BAD_VERSION;
			continue;
		}
		if (d->device_id == VIRTIO_ID_BLOCK) {
			virtio_blk_count_device(d);
			accepted = virtio_blk_features();
			min_queue = 4;		/* one 3-descriptor request */
		} else if (d->device_id == VIRTIO_ID_RNG) {
			virtio_rng_count_device(d);
			accepted = FEATURE(VIRTIO_RING_F_EVENT_IDX);
			min_queue = 1;
		} else if (d->device_id == VIRTIO_ID_VSOCK) {
			virtio_vsock_count_device(d);
			accepted = FEATURE(VIRTIO_RING_F_EVENT_IDX);
			min_queue = VSOCK_MIN_QUEUE;
		} else if (d->device_id == VIRTIO_ID_NET) {
			virtio_net_count_device(d);
			accepted = virtio_net_features();
			min_queue = 2;
			queues = 2;
		} else {
			d->state = VIRTIO_NO_DRIVER;
			continue;
		}
		err = ram_ok ? init_device(d, accepted, min_queue, queues)
			     : "no usable RAM at 0x400000..0xa00000";
		if (err) {
			init_failed(d, i, err);
			continue;
		}
		d->state = VIRTIO_OK;
		if (d->device_id == VIRTIO_ID_BLOCK)
			virtio_blk_attach(d);
		if (d->device_id == VIRTIO_ID_VSOCK)
			virtio_vsock_attach(d);
		if (d->device_id == VIRTIO_ID_NET)
			virtio_net_attach(d);
	}
}
