/*
 * virtio_cmd.c: the virtio actions of `kindling.test=`: `virtio`, the
 * `blk-*` family, `rng`, `blk-bench`, the `vsock-*` and the `net-*` families. An action's arguments follow its
 * name, separated by ':' (decimal numbers). This file parses them, calls
 * the drivers and prints the lines documented in src/lib.rs.
 */
#include "virtio.h"

#define MAX_ARGS		5
#define CHUNK_SECTORS		(VIRTIO_IO_BUF_SIZE / 512)	/* per request */
#define RNG_MAX_BYTES		4096

struct args {
	struct span name;	/* the action's name, for error lines */
	struct span v[MAX_ARGS];
	unsigned n;
	uint64_t zero_page;
};

/* ---- errors ----------------------------------------------------------- */

static __attribute__((noreturn)) void bad_arguments(const struct args *a)
{
	out_span(a->name);
	out_str(": bad arguments");
	out_line();
	guest_exit(EXIT_BAD_ARGUMENTS);
}

static void device_error_line(const char *prefix, int result)
{
	out_str(prefix);
	out_str(result == BLK_TIMEOUT ? ": timeout" : ": bad used element");
	out_line();
}

void blk_device_failed(unsigned index, int result)
{
	out_str("blk");
	out_dec(index);
	device_error_line("", result);
	guest_exit(EXIT_DEVICE_ERROR);
}

/* ---- arguments -------------------------------------------------------- */

/* Argument i as a decimal number in [min, max], or bad arguments. */
static uint64_t arg_num(const struct args *a, unsigned i, uint64_t min, uint64_t max)
{
	uint64_t v;

	if (i >= a->n || !parse_dec(a->v[i], &v) || v < min || v > max)
		bad_arguments(a);
	return v;
}

/* Probes the devices, then returns block device `index`: bad arguments if
 * there is none, "blk<D>: not ready" (status 3) if it did not initialise. */
static struct blk_dev *blk_arg(const struct args *a, uint64_t index)
{
	struct blk_dev *b;

	virtio_probe_all(a->zero_page);
	b = blk_get((unsigned)index);
	if (!b)
		bad_arguments(a);
	if (!blk_ready(b)) {
		out_str("blk");
		out_dec(index);
		out_str(": not ready");
		out_line();
		guest_exit(EXIT_DEVICE_ERROR);
	}
	return b;
}

/* ---- output ----------------------------------------------------------- */

static void out_blk(unsigned index, const char *what)
{
	out_str("blk");
	out_dec(index);
	out_str(": ");
	out_str(what);
}

static void out_range(uint64_t sector, uint64_t count)
{
	out_str(" sector=");
	out_dec(sector);
	out_str(" count=");
	out_dec(count);
}

static void out_status(unsigned status)
{
	out_str(" status=");
	if (status == VIRTIO_BLK_S_OK) {
		out_str("OK");
	} else if (status == VIRTIO_BLK_S_IOERR) {
		out_str("IOERR");
	} else if (status == VIRTIO_BLK_S_UNSUPP) {
		out_str("UNSUPP");
	} else {
		out_str("?");
		out_dec(status);
	}
}

static void out_flag(const char *name, uint64_t features, unsigned bit)
{
	out_str(name);
	out_str((features & FEATURE(bit)) ? "1" : "0");
}

/* A request's result: its status byte, or the end of the VM. */
static unsigned checked(unsigned index, int result)
{
	if (result < 0)
		blk_device_failed(index, result);
	return (unsigned)result;
}

/* ---- the actions ------------------------------------------------------ */

static const char *type_name(const struct virtio_dev *d)
{
	if (d->device_id == VIRTIO_ID_BLOCK)
		return "blk";
	if (d->device_id == VIRTIO_ID_RNG)
		return "rng";
	if (d->device_id == VIRTIO_ID_VSOCK)
		return "vsock";
	if (d->device_id == VIRTIO_ID_NET)
		return "net";
	return NULL;
}

static const char *const state_names[] = {
	[VIRTIO_OK] = "ok",
	[VIRTIO_BAD_MAGIC] = "bad magic",
	[VIRTIO_BAD_VERSION] = "bad version",
	[VIRTIO_NO_DRIVER] = "no driver",
	[VIRTIO_INIT_FAILED] = "init failed",
};

static void act_virtio(const struct args *a)
{
	unsigned n;

	if (a->n)
		bad_arguments(a);
	virtio_probe_all(a->zero_page);
	n = virtio_count();
	out_str("virtio: ");
	out_dec(n);
	out_str(" devices");
	out_line();
	for (unsigned i = 0; i < n; i++) {
		struct virtio_dev *d = virtio_get(i);
		const char *type = type_name(d);

		out_str("virtio");
		out_dec(i);
		out_str(": base=");
		out_hex(d->base, 1);
		out_str(" irq=");
		out_dec(d->irq);
		out_str(" type=");
		if (type) {
			out_str(type);
		} else {
			out_str("other(");
			out_dec(d->device_id);
			out_str(")");
		}
		out_str(" status=");
		out_str(state_names[d->state]);
		out_line();
	}
}

static void act_blk_info(const struct args *a)
{
	uint64_t d = arg_num(a, 0, 0, UINT32_MAX);
	struct blk_dev *b;
	uint64_t f;

	if (a->n != 1)
		bad_arguments(a);
	b = blk_arg(a, d);
	f = b->dev->features;
	out_blk((unsigned)d, "capacity=");
	out_dec(b->capacity);
	out_flag(" ro=", f, VIRTIO_BLK_F_RO);
	out_flag(" flush=", f, VIRTIO_BLK_F_FLUSH);
	out_flag(" discard=", f, VIRTIO_BLK_F_DISCARD);
	out_flag(" write-zeroes=", f, VIRTIO_BLK_F_WRITE_ZEROES);
	out_flag(" event-idx=", f, VIRTIO_RING_F_EVENT_IDX);
	out_str(" queue=");
	out_dec(b->dev->vq.size);
	out_line();
}

static void act_blk_id(const struct args *a)
{
	uint64_t d = arg_num(a, 0, 0, UINT32_MAX);
	char *id = (char *)VIRTIO_IO_BUF;
	struct blk_dev *b;
	unsigned status;

	if (a->n != 1)
		bad_arguments(a);
	b = blk_arg(a, d);
	memset(id, 0, VIRTIO_BLK_ID_BYTES);
	status = checked((unsigned)d, blk_do(b, VIRTIO_BLK_T_GET_ID, 0, VIRTIO_IO_BUF,
					     VIRTIO_BLK_ID_BYTES, true));
	out_blk((unsigned)d, "get-id");
	out_status(status);
	if (status == VIRTIO_BLK_S_OK) {
		out_str(" id=");
		for (unsigned i = 0; i < VIRTIO_BLK_ID_BYTES && id[i]; i++) {
			char c = id[i];

			out_mem(c >= 0x20 && c < 0x7f ? &c : ".", 1);
		}
	}
	out_line();
}

/* blk-read and blk-write: COUNT sectors in requests of at most 64 KiB. */
static void act_blk_rw(const struct args *a, bool write)
{
	uint64_t d = arg_num(a, 0, 0, UINT32_MAX);
	uint64_t sector = arg_num(a, 1, 0, UINT64_MAX);
	uint64_t count = arg_num(a, 2, 1, UINT64_MAX - sector);
	uint8_t fill = write ? (uint8_t)arg_num(a, 3, 0, 255) : 0;
	unsigned status = VIRTIO_BLK_S_OK;
	struct blk_dev *b;
	uint32_t crc = 0;

	if (a->n != (write ? 4u : 3u))
		bad_arguments(a);
	b = blk_arg(a, d);
	if (write)
		memset((void *)VIRTIO_IO_BUF, fill, VIRTIO_IO_BUF_SIZE);
	for (uint64_t done = 0; done < count && status == VIRTIO_BLK_S_OK;) {
		uint64_t n = count - done < CHUNK_SECTORS ? count - done : CHUNK_SECTORS;

		status = checked((unsigned)d,
				 blk_do(b, write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN,
					sector + done, VIRTIO_IO_BUF, (uint32_t)(n * 512),
					!write));
		if (status == VIRTIO_BLK_S_OK && !write)
			crc = crc32_update(crc, (const void *)VIRTIO_IO_BUF, n * 512);
		done += n;
	}
	out_blk((unsigned)d, write ? "write" : "read");
	out_range(sector, count);
	out_status(status);
	if (status == VIRTIO_BLK_S_OK && !write) {
		out_str(" crc32=");
		out_hex(crc, 8);
	}
	out_line();
}

static void act_blk_flush(const struct args *a)
{
	uint64_t d = arg_num(a, 0, 0, UINT32_MAX);
	struct blk_dev *b;
	unsigned status;

	if (a->n != 1)
		bad_arguments(a);
	b = blk_arg(a, d);
	status = checked((unsigned)d, blk_do(b, VIRTIO_BLK_T_FLUSH, 0, 0, 0, false));
	out_blk((unsigned)d, "flush");
	out_status(status);
	out_line();
}

/* blk-discard and blk-zeroes: one request with one segment. */
static void act_blk_segment(const struct args *a, uint32_t type)
{
	uint64_t d = arg_num(a, 0, 0, UINT32_MAX);
	uint64_t sector = arg_num(a, 1, 0, UINT64_MAX);
	uint64_t count = arg_num(a, 2, 1, UINT32_MAX);
	struct blk_dev *b;
	unsigned status;
	struct {
		uint64_t sector;
		uint32_t num_sectors;
		uint32_t flags;
	} seg = { sector, (uint32_t)count, 0 };

	if (a->n != 3)
		bad_arguments(a);
	b = blk_arg(a, d);
	memcpy(b->misc, &seg, sizeof(seg));
	status = checked((unsigned)d, blk_do(b, type, 0, (uint64_t)(uintptr_t)b->misc,
					     sizeof(seg), false));
	out_blk((unsigned)d, type == VIRTIO_BLK_T_DISCARD ? "discard" : "write-zeroes");
	out_range(sector, count);
	out_status(status);
	out_line();
}

static void act_rng(const struct args *a)
{
	uint64_t want = arg_num(a, 0, 1, RNG_MAX_BYTES);
	const uint8_t *buf = (const uint8_t *)VIRTIO_IO_BUF;
	struct virtio_dev *d;
	uint64_t got = 0, nonzero = 0;

	if (a->n != 1)
		bad_arguments(a);
	virtio_probe_all(a->zero_page);
	d = rng_first();
	if (!d || d->state != VIRTIO_OK) {
		out_str(d ? "rng: not ready" : "rng: no device");
		out_line();
		guest_exit(EXIT_DEVICE_ERROR);
	}
	/* The device may return fewer bytes than asked: ask again until it
	 * has given them all or returns nothing (at most `want` requests). */
	while (got < want) {
		int64_t r = rng_read(d, VIRTIO_IO_BUF + got, (uint32_t)(want - got));

		if (r < 0) {
			device_error_line("rng", (int)r);
			guest_exit(EXIT_DEVICE_ERROR);
		}
		if (r == 0)
			break;
		got += (uint64_t)r;
	}
	for (uint64_t i = 0; i < got; i++)
		nonzero += buf[i] != 0;
	out_str("rng: bytes=");
	out_dec(got);
	out_str(" crc32=");
	out_hex(crc32_update(0, buf, got), 8);
	out_str(" nonzero=");
	out_dec(nonzero);
	out_line();
}

/* The first vsock device, or the end of the VM. */
static struct virtio_dev *vsock_arg(const struct args *a)
{
	struct virtio_dev *d;

	virtio_probe_all(a->zero_page);
	d = vsock_first();
	if (!d || d->state != VIRTIO_OK) {
		out_str(d ? "vsock: not ready" : "vsock: no device");
		out_line();
		guest_exit(EXIT_DEVICE_ERROR);
	}
	return d;
}

static void act_vsock_connect(const struct args *a)
{
	uint64_t port = arg_num(a, 0, 0, UINT32_MAX);
	uint64_t bytes = arg_num(a, 1, 0, UINT32_MAX);

	if (a->n != 2)
		bad_arguments(a);
	vsock_connect(vsock_arg(a), (uint32_t)port, bytes);
}

static void act_vsock_listen(const struct args *a)
{
	uint64_t port = arg_num(a, 0, 0, UINT32_MAX);

	if (a->n != 1)
		bad_arguments(a);
	vsock_listen(vsock_arg(a), (uint32_t)port);
}

static void act_blk_bench(const struct args *a)
{
	static const char *const modes[] = {
		[BENCH_RANDREAD] = "randread",
		[BENCH_SEQREAD] = "seqread",
		[BENCH_RANDWRITE] = "randwrite",
		[BENCH_SEQWRITE] = "seqwrite",
	};
	uint64_t d = arg_num(a, 0, 0, UINT32_MAX);
	uint64_t bs = arg_num(a, 2, 512, BENCH_BUF_SIZE);
	uint64_t qd = arg_num(a, 3, 1, BENCH_MAX_QD);
	uint64_t ops = arg_num(a, 4, 1, UINT64_MAX);
	struct bench_params p;
	struct blk_dev *b;
	unsigned m;

	for (m = 0; m < 4; m++) {
		if (span_eq(a->v[1], modes[m]))
			break;
	}
	if (m == 4 || a->n != 5 || bs % 512)
		bad_arguments(a);
	b = blk_arg(a, d);
	if (qd > b->slots || b->capacity < bs / 512)
		bad_arguments(a);
	p = (struct bench_params){
		.mode = (enum bench_mode)m,
		.block_size = (uint32_t)bs,
		.queue_depth = (uint16_t)qd,
		.ops = ops,
	};
	blk_bench(b, (unsigned)d, &p);
}

/*
 * blk-hog:D:COUNT:KIB, an adversarial workload: COUNT reads of KIB KiB
 * each from sector 0, the queue kept full, every one into the same buffer
 * at HOG_BUF (so a few MiB of guest RAM stand for any amount of I/O).
 * The device must refuse what is larger than it advertised and must not
 * hold its event loop for long however many reads are queued. Prints
 * "blk<D>: hog done=N ok=X ioerr=Y".
 */
#define HOG_BUF		0x1000000UL	/* 16 MiB, above the driver's memory */
#define HOG_MAX_KIB	65536		/* the buffer ends at 80 MiB */

static void act_blk_hog(const struct args *a)
{
	uint64_t d = arg_num(a, 0, 0, UINT32_MAX);
	uint64_t count = arg_num(a, 1, 1, UINT32_MAX);
	uint64_t kib = arg_num(a, 2, 1, HOG_MAX_KIB);
	uint64_t submitted = 0, done = 0, ok = 0, ioerr = 0;
	uint16_t free_slots[BLK_MAX_SLOTS];
	uint16_t nfree, slot;
	struct blk_dev *b;
	int r;

	if (a->n != 3)
		bad_arguments(a);
	b = blk_arg(a, d);
	if (b->capacity < kib * 2)
		bad_arguments(a);
	for (nfree = 0; nfree < b->slots; nfree++)
		free_slots[nfree] = nfree;
	while (done < count) {
		while (nfree && submitted < count) {
			slot = free_slots[--nfree];
			blk_prepare(b, slot, VIRTIO_BLK_T_IN, 0, HOG_BUF,
				    (uint32_t)(kib * 1024), true);
			blk_submit(b, slot);
			submitted++;
		}
		blk_kick(b);
		if (!virtq_wait_used(&b->dev->vq))
			blk_device_failed((unsigned)d, BLK_TIMEOUT);
		while ((r = blk_reap(b, &slot)) > 0) {
			if (b->status[slot] == VIRTIO_BLK_S_OK)
				ok++;
			else
				ioerr++;
			free_slots[nfree++] = slot;
			done++;
		}
		if (r < 0)
			blk_device_failed((unsigned)d, r);
	}
	out_blk((unsigned)d, "hog done=");
	out_dec(done);
	out_str(" ok=");
	out_dec(ok);
	out_str(" ioerr=");
	out_dec(ioerr);
	out_line();
}

/* ---- network ---------------------------------------------------------- */

#define NET_ETHERTYPE_TEST	0x88b5	/* IEEE local experimental */
#define NET_TX_BATCH		32	/* net-send frames per kick */

/* Probes the devices and returns the first network device, or ends the
 * VM with "net: no device" / "net: not ready" (status 3). */
static struct virtio_dev *net_arg(const struct args *a)
{
	struct virtio_dev *d;

	virtio_probe_all(a->zero_page);
	d = net_first();
	if (!d || d->state != VIRTIO_OK) {
		out_str(d ? "net: not ready" : "net: no device");
		out_line();
		guest_exit(EXIT_DEVICE_ERROR);
	}
	return d;
}

static __attribute__((noreturn)) void net_failed(int64_t result)
{
	device_error_line("net", (int)result);
	guest_exit(EXIT_DEVICE_ERROR);
}

static uint8_t *net_buffer(void)
{
	uint8_t *buf = net_tx_buffer();

	if (!buf)
		net_failed(BLK_TIMEOUT);
	return buf;
}

static void act_net_info(const struct args *a)
{
	struct virtio_dev *d;
	uint8_t mac[6];

	if (a->n)
		bad_arguments(a);
	d = net_arg(a);
	net_mac(mac);
	out_str("net0: mac=");
	for (unsigned i = 0; i < 6; i++) {
		static const char hex[] = "0123456789abcdef";
		char b[3] = { hex[mac[i] >> 4], hex[mac[i] & 15], ':' };

		out_mem(b, i < 5 ? 3 : 2);
	}
	out_flag(" mac-feature=", d->features, VIRTIO_NET_F_MAC);
	out_flag(" mrg-rxbuf=", d->features, VIRTIO_NET_F_MRG_RXBUF);
	out_flag(" csum=", d->features, VIRTIO_NET_F_CSUM);
	out_flag(" guest-csum=", d->features, VIRTIO_NET_F_GUEST_CSUM);
	out_flag(" event-idx=", d->features, VIRTIO_RING_F_EVENT_IDX);
	out_str(" rxq=");
	out_dec(d->vq.size);
	out_str(" txq=");
	out_dec(d->vq1.size);
	out_line();
}

/* Waits until the device has taken every queued frame, then prints
 * "<action>: done frames=N bytes=B". */
static void net_sent(const char *action, uint64_t n, uint64_t bytes)
{
	if (!net_tx_drain())
		net_failed(BLK_TIMEOUT);
	out_str(action);
	out_str(": done frames=");
	out_dec(n);
	out_str(" bytes=");
	out_dec(bytes);
	out_line();
}

/* net-send:N:LEN: N broadcast frames of LEN bytes from our MAC, EtherType
 * 0x88b5; payload: the frame number (le32), then byte k = (number + k). */
static void act_net_send(const struct args *a)
{
	uint64_t n = arg_num(a, 0, 1, UINT32_MAX);
	uint64_t len = arg_num(a, 1, 18, NET_MAX_FRAME);
	uint8_t mac[6];
	uint64_t bytes = 0;

	if (a->n != 2)
		bad_arguments(a);
	net_arg(a);
	net_mac(mac);
	out_str("net-send: start");
	out_line();
	for (uint64_t i = 0; i < n; i++) {
		uint8_t *buf = net_buffer();
		uint8_t *f = buf + NET_HDR_LEN;
		uint32_t seq = (uint32_t)i;

		memset(buf, 0, NET_HDR_LEN);
		memset(f, 0xff, 6);
		memcpy(f + 6, mac, 6);
		f[12] = NET_ETHERTYPE_TEST >> 8;
		f[13] = NET_ETHERTYPE_TEST & 0xff;
		memcpy(f + 14, &seq, 4);
		for (uint64_t k = 18; k < len; k++)
			f[k] = (uint8_t)(seq + k);
		/* Publish in batches, as a driver with more to send would. */
		net_tx_submit((uint32_t)(NET_HDR_LEN + len), i % NET_TX_BATCH == NET_TX_BATCH - 1);
		bytes += len;
	}
	net_sent("net-send", n, bytes);
}

/* net-echo:N: receives N frames and sends each back unchanged (with its
 * partial-checksum request, if any). */
static void act_net_echo(const struct args *a)
{
	uint64_t n = arg_num(a, 0, 1, UINT32_MAX);
	uint64_t bytes = 0, csum = 0, dropped = 0;
	struct virtio_dev *d;

	if (a->n != 1)
		bad_arguments(a);
	d = net_arg(a);
	out_str("net-echo: start");
	out_line();
	for (uint64_t i = 0; i < n; i++) {
		uint8_t *buf = net_buffer();
		int64_t len = net_recv(buf, NET_BUF_SIZE);
		struct virtio_net_hdr *h = (struct virtio_net_hdr *)buf;

		if (len < 0)
			net_failed(len);
		if (len == 0) {
			dropped++;
			continue;
		}
		if (h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)
			csum++;
		if (!(d->features & FEATURE(VIRTIO_NET_F_CSUM)))
			h->flags = 0;
		h->flags &= VIRTIO_NET_HDR_F_NEEDS_CSUM;
		h->gso_type = 0;
		h->num_buffers = 0;
		net_tx_submit((uint32_t)len, true);
		bytes += (uint64_t)len - NET_HDR_LEN;
	}
	if (!net_tx_drain())
		net_failed(BLK_TIMEOUT);
	out_str("net-echo: done frames=");
	out_dec(n - dropped);
	out_str(" bytes=");
	out_dec(bytes);
	out_str(" csum=");
	out_dec(csum);
	out_str(" dropped=");
	out_dec(dropped);
	out_line();
}

/* net-recv:N[:CRC]: receives N frames; CRC-32 of the frames without
 * headers unless CRC is 0. */
static void act_net_recv(const struct args *a)
{
	uint64_t n = arg_num(a, 0, 1, UINT32_MAX);
	bool check = a->n < 2 || arg_num(a, 1, 0, 1) == 1;
	uint8_t *buf = (uint8_t *)VIRTIO_IO_BUF;
	uint64_t bytes = 0, dropped = 0;
	uint32_t crc = 0;

	if (a->n != 1 && a->n != 2)
		bad_arguments(a);
	net_arg(a);
	out_str("net-recv: start");
	out_line();
	for (uint64_t i = 0; i < n; i++) {
		int64_t len = net_recv(buf, VIRTIO_IO_BUF_SIZE);

		if (len < 0)
			net_failed(len);
		if (len == 0) {
			dropped++;
			continue;
		}
		if (check)
			crc = crc32_update(crc, buf + NET_HDR_LEN, (size_t)len - NET_HDR_LEN);
		bytes += (uint64_t)len - NET_HDR_LEN;
	}
	out_str("net-recv: done frames=");
	out_dec(n - dropped);
	out_str(" bytes=");
	out_dec(bytes);
	if (check) {
		out_str(" crc32=");
		out_hex(crc, 8);
	}
	out_line();
}

static uint16_t be16(uint16_t v)
{
	return (uint16_t)(v >> 8 | v << 8);
}

/* One's-complement sum of n bytes (n even), not folded. */
static uint32_t sum16(const uint8_t *p, size_t n, uint32_t sum)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	return sum;
}

static uint16_t fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

/* net-csum: one UDP/IPv4 frame (169.254.1.2:1234 -> 169.254.1.1:5678, 32
 * bytes of payload) whose UDP checksum is left to the device
 * (VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start 34, csum_offset 6): the
 * checksum field holds the pseudo-header sum, as Linux leaves it. */
static void act_net_csum(const struct args *a)
{
	static const uint8_t ips[8] = { 169, 254, 1, 2, 169, 254, 1, 1 };
	struct virtio_net_hdr *h;
	uint8_t mac[6], *buf, *f, *ip, *udp;
	uint16_t v;

	if (a->n)
		bad_arguments(a);
	net_arg(a);
	net_mac(mac);
	buf = net_buffer();
	memset(buf, 0, NET_HDR_LEN + 74);
	h = (struct virtio_net_hdr *)buf;
	h->flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
	h->csum_start = 34;
	h->csum_offset = 6;
	f = buf + NET_HDR_LEN;
	memset(f, 0xff, 6);
	memcpy(f + 6, mac, 6);
	f[12] = 0x08;
	ip = f + 14;
	ip[0] = 0x45;
	v = be16(20 + 8 + 32);
	memcpy(ip + 2, &v, 2);
	ip[8] = 64;
	ip[9] = 17;
	memcpy(ip + 12, ips, 8);
	v = be16((uint16_t)~fold(sum16(ip, 20, 0)));
	memcpy(ip + 10, &v, 2);
	udp = ip + 20;
	v = be16(1234);
	memcpy(udp, &v, 2);
	v = be16(5678);
	memcpy(udp + 2, &v, 2);
	v = be16(8 + 32);
	memcpy(udp + 4, &v, 2);
	for (unsigned k = 0; k < 32; k++)
		udp[8 + k] = (uint8_t)k;
	v = be16(fold(sum16(ips, 8, 17 + 8 + 32)));
	memcpy(udp + 6, &v, 2);
	net_tx_submit(NET_HDR_LEN + 74, true);
	if (!net_tx_drain())
		net_failed(BLK_TIMEOUT);
	out_str("net-csum: sent");
	out_line();
}

#define NET_TSO_HDRS	54	/* Ethernet, IPv4 and TCP headers */
#define NET_TSO_MSS	1448	/* TCP payload per segment */
#define NET_TSO_BATCH	8	/* net-tso frames per kick */

static void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	put_be16(p, (uint16_t)(v >> 16));
	put_be16(p + 2, (uint16_t)v);
}

/* net-tso:N:LEN: N TCP/IPv4 frames of LEN bytes (the 54 bytes of headers
 * included; 55..=65536) from 169.254.1.2:1234 to 169.254.1.1:5678, each
 * handed to the device whole for segmentation into 1448-byte segments
 * (VIRTIO_NET_HDR_GSO_TCPV4, NEEDS_CSUM with csum_start 34, csum_offset
 * 16; no GSO for a payload of 1448 bytes or less). Needs
 * VIRTIO_NET_F_HOST_TSO4 and _CSUM. Frame i: IPv4 id i, TCP sequence
 * number i * payload, flags ACK; payload byte j is j mod 251 in every
 * frame (written once per buffer, before `start`). */
static void act_net_tso(const struct args *a)
{
	static const uint8_t ips[8] = { 169, 254, 1, 2, 169, 254, 1, 1 };
	const uint64_t want = FEATURE(VIRTIO_NET_F_HOST_TSO4) | FEATURE(VIRTIO_NET_F_CSUM);
	uint64_t n = arg_num(a, 0, 1, UINT32_MAX);
	uint64_t len = arg_num(a, 1, NET_TSO_HDRS + 1, NET_TSO_MAX_FRAME);
	uint32_t payload = (uint32_t)len - NET_TSO_HDRS;
	uint64_t bytes = 0;
	struct virtio_dev *d;
	uint8_t mac[6];

	if (a->n != 2)
		bad_arguments(a);
	d = net_arg(a);
	if ((d->features & want) != want) {
		out_str("net-tso: no TSO");
		out_line();
		guest_exit(EXIT_DEVICE_ERROR);
	}
	net_mac(mac);
	for (uint64_t s = 0; s < NET_TSO_SLOTS; s++) {
		uint8_t *p = (uint8_t *)(uintptr_t)(NET_TSO_BUFS + s * NET_TSO_BUF_SIZE);
		uint8_t b = 0;

		p += NET_HDR_LEN + NET_TSO_HDRS;
		for (uint32_t j = 0; j < payload; j++) {
			p[j] = b;
			b = b == 250 ? 0 : b + 1;
		}
	}
	out_str("net-tso: start");
	out_line();
	for (uint64_t i = 0; i < n; i++) {
		uint8_t *buf = net_tx_tso_buffer();
		struct virtio_net_hdr *h = (struct virtio_net_hdr *)buf;
		uint8_t *f, *ip, *tcp;

		if (!buf)
			net_failed(BLK_TIMEOUT);
		memset(buf, 0, NET_HDR_LEN + NET_TSO_HDRS);
		h->flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
		h->csum_start = 34;
		h->csum_offset = 16;
		if (payload > NET_TSO_MSS) {
			h->gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
			h->hdr_len = NET_TSO_HDRS;
			h->gso_size = NET_TSO_MSS;
		}
		f = buf + NET_HDR_LEN;
		memset(f, 0xff, 6);
		memcpy(f + 6, mac, 6);
		f[12] = 0x08;
		ip = f + 14;
		ip[0] = 0x45;
		put_be16(ip + 2, (uint16_t)(len - 14));
		put_be16(ip + 4, (uint16_t)i);
		ip[6] = 0x40;	/* don't fragment */
		ip[8] = 64;
		ip[9] = 6;
		memcpy(ip + 12, ips, 8);
		put_be16(ip + 10, (uint16_t)~fold(sum16(ip, 20, 0)));
		tcp = ip + 20;
		put_be16(tcp, 1234);
		put_be16(tcp + 2, 5678);
		put_be32(tcp + 4, (uint32_t)(i * payload));
		tcp[12] = 5 << 4;
		tcp[13] = 0x10;	/* ACK */
		put_be16(tcp + 14, 65535);
		/* The pseudo-header sum, as Linux leaves it for the device. */
		put_be16(tcp + 16, fold(sum16(ips, 8, 6 + (uint32_t)len - 34)));
		net_tx_tso_submit((uint32_t)(NET_HDR_LEN + len), i % NET_TSO_BATCH == NET_TSO_BATCH - 1);
		bytes += payload;
	}
	net_sent("net-tso", n, bytes);
}

/* ---- dispatch --------------------------------------------------------- */

static void act_blk_read(const struct args *a)
{
	act_blk_rw(a, false);
}

static void act_blk_write(const struct args *a)
{
	act_blk_rw(a, true);
}

static void act_blk_discard(const struct args *a)
{
	act_blk_segment(a, VIRTIO_BLK_T_DISCARD);
}

static void act_blk_zeroes(const struct args *a)
{
	act_blk_segment(a, VIRTIO_BLK_T_WRITE_ZEROES);
}

/* ---- count ------------------------------------------------------------ */

#define COUNT_PERIOD_TSC	20000000ULL	/* cycles between two lines */
#define COUNT_DISK_SECTORS	64		/* sectors count:D cycles through */

/*
 * count and count:D: print "count: N" for N = 0, 1, 2, ... forever, one
 * line every COUNT_PERIOD_TSC cycles. With a disk, each line is preceded
 * by a write of sector N % 64 of block device D, every byte N & 0xff. The
 * counter lives in guest memory, so a restored snapshot goes on from it.
 */
static __attribute__((noreturn)) void act_count(const struct args *a)
{
	static volatile uint64_t counter;
	struct blk_dev *b = NULL;
	uint64_t d = 0;

	if (a->n > 1)
		bad_arguments(a);
	if (a->n == 1) {
		d = arg_num(a, 0, 0, UINT32_MAX);
		b = blk_arg(a, d);
	}
	for (;;) {
		uint64_t n = counter;
		uint64_t start;

		if (b) {
			unsigned status;

			memset((void *)VIRTIO_IO_BUF, (int)(n & 0xff), 512);
			status = checked((unsigned)d,
					 blk_do(b, VIRTIO_BLK_T_OUT, n % COUNT_DISK_SECTORS,
						VIRTIO_IO_BUF, 512, false));
			if (status != VIRTIO_BLK_S_OK) {
				out_blk((unsigned)d, "write");
				out_range(n % COUNT_DISK_SECTORS, 1);
				out_status(status);
				out_line();
				guest_exit(EXIT_DEVICE_ERROR);
			}
		}
		out_str("count: ");
		out_dec(n);
		out_line();
		counter = n + 1;
		start = rdtsc();
		while (rdtsc() - start < COUNT_PERIOD_TSC)
			cpu_relax();
	}
}

#define COUNT_TOUCH_BASE	(16ULL << 20)	/* count-touch writes from here */
#define COUNT_TOUCH_MAX_KIB	(1ULL << 20)	/* at most 1 GiB */

/*
 * count-touch:KIB: as count, and before each line writes KIB KiB of guest
 * memory from 16 MiB up (the same pages every time), every byte N | 1, so
 * that a snapshot taken after at least one more line finds those pages
 * dirty. The guest must have 16 MiB + KIB KiB of memory.
 */
static __attribute__((noreturn)) void act_count_touch(const struct args *a)
{
	static volatile uint64_t counter;
	uint64_t kib;

	if (a->n != 1)
		bad_arguments(a);
	kib = arg_num(a, 0, 1, COUNT_TOUCH_MAX_KIB);
	for (;;) {
		uint64_t n = counter;
		uint64_t start;

		memset((void *)COUNT_TOUCH_BASE, (int)((n & 0xff) | 1), kib << 10);
		out_str("count: ");
		out_dec(n);
		out_line();
		counter = n + 1;
		start = rdtsc();
		while (rdtsc() - start < COUNT_PERIOD_TSC)
			cpu_relax();
	}
}

static const struct {
	const char *name;
	void (*run)(const struct args *a);
} actions[] = {
	{ "virtio", act_virtio },
	{ "blk-info", act_blk_info },
	{ "blk-id", act_blk_id },
	{ "blk-read", act_blk_read },
	{ "blk-write", act_blk_write },
	{ "blk-flush", act_blk_flush },
	{ "blk-discard", act_blk_discard },
	{ "blk-zeroes", act_blk_zeroes },
	{ "rng", act_rng },
	{ "blk-bench", act_blk_bench },
	{ "blk-hog", act_blk_hog },
	{ "count", act_count },
	{ "count-touch", act_count_touch },
	{ "vsock-connect", act_vsock_connect },
	{ "vsock-listen", act_vsock_listen },
	{ "net-info", act_net_info },
	{ "net-send", act_net_send },
	{ "net-echo", act_net_echo },
	{ "net-recv", act_net_recv },
	{ "net-csum", act_net_csum },
	{ "net-tso", act_net_tso },
};

bool virtio_action(struct span action, uint64_t zero_page)
{
	struct span rest = action;
	struct args a = { .zero_page = zero_page };
	unsigned i;

	a.name = next_piece(&rest, is_colon);
	for (i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
		if (span_eq(a.name, actions[i].name))
			break;
	}
	if (i == sizeof(actions) / sizeof(actions[0]))
		return false;
	if (a.name.n < action.n) {
		/* As many arguments as there are ':' (some may be empty). */
		for (;;) {
			struct span piece = { rest.p, 0 };

			if (a.n == MAX_ARGS)
				bad_arguments(&a);
			while (piece.n < rest.n && rest.p[piece.n] != ':')
				piece.n++;
			a.v[a.n++] = piece;
			if (piece.n == rest.n)
				break;
			rest.p += piece.n + 1;
			rest.n -= piece.n + 1;
		}
	}
	actions[i].run(&a);
	return true;
}
