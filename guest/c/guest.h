/*
 * guest.h: declarations shared by the Kindling test guest's C files.
 *
 * All C code runs in ring 3 (see start.S) with IOPL=3, on an identity map
 * of 0..4 GiB, so physical addresses are pointers and port I/O is allowed.
 */
#ifndef KINDLING_GUEST_H
#define KINDLING_GUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Ports and addresses of the boot contract (see src/lib.rs). */
#define COM1_PORT		0x3f8	/* 16550 transmit holding register */
#define DEBUG_EXIT_PORT		0xf4	/* byte N: the VMM exits with status N */
#define BENCH_PORT		0xf5	/* target of the pio-loop benchmark */
#define I8042_COMMAND_PORT	0x64	/* 0xfe: reset */
#define I8042_RESET		0xfe
#define BOOT_TIMER_ADDR		0xc0000000UL	/* MMIO: byte 123 logs boot time */
#define BOOT_TIMER_MAGIC	123
#define LAPIC_ADDR		0xfee00000UL

/* Everything above this is not mapped by our page tables. */
#define MAPPED_LIMIT		0x100000000ULL

/* ---- port and memory access ------------------------------------------ */

static inline void outb(uint16_t port, uint8_t value)
{
	__asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t value;

	__asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
	return value;
}

/* Writes n bytes to one port with a single `rep outsb`. */
static inline void outsb(uint16_t port, const void *buf, size_t n)
{
	__asm__ volatile("rep outsb"
			 : "+S"(buf), "+c"(n)
			 : "d"(port), "m"(*(const char (*)[n])buf));
}

/* The time-stamp counter (ring 3 may read it: CR4.TSD is clear). */
static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

static inline void cpu_relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}

/* Reads of (possibly unaligned) little-endian fields at a physical address. */
static inline uint8_t phys_read8(uint64_t addr)
{
	return *(const volatile uint8_t *)(uintptr_t)addr;
}

static inline uint16_t phys_read16(uint64_t addr)
{
	uint16_t v;
	__builtin_memcpy(&v, (const void *)(uintptr_t)addr, sizeof(v));
	return v;
}

static inline uint32_t phys_read32(uint64_t addr)
{
	uint32_t v;
	__builtin_memcpy(&v, (const void *)(uintptr_t)addr, sizeof(v));
	return v;
}

static inline uint64_t phys_read64(uint64_t addr)
{
	uint64_t v;
	__builtin_memcpy(&v, (const void *)(uintptr_t)addr, sizeof(v));
	return v;
}

/* Whether [addr, addr + len) lies inside our identity map. */
static inline bool phys_range_mapped(uint64_t addr, uint64_t len)
{
	return addr < MAPPED_LIMIT && len <= MAPPED_LIMIT - addr;
}

/* ---- string.c: what the compiler may call, and small helpers ---------- */

void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

/* ---- parse.c: pieces of the command line ------------------------------ */

/* A piece of the command line (not NUL-terminated). */
struct span {
	const char *p;
	size_t n;
};

bool is_space(char c);
bool is_comma(char c);
bool is_colon(char c);
bool span_eq(struct span s, const char *lit);
/* If s starts with prefix, drops the prefix and returns true. */
bool take_prefix(struct span *s, const char *prefix);
/*
 * Splits off the next piece of *rest ending at a separator (is_sep) and
 * returns it; pieces may be empty. *rest becomes what follows the separator.
 */
struct span next_piece(struct span *rest, bool (*is_sep)(char));
/* Decimal "0".."255"; false for anything else. */
bool parse_u8(struct span s, uint8_t *out);
/* Decimal digits only, no sign, no overflow past 2^64 - 1. */
bool parse_dec(struct span s, uint64_t *out);
/* "0x" + hex digits, or decimal digits; no overflow. */
bool parse_num(struct span s, uint64_t *out);

/* ---- serial.c: whole lines on COM1, one `rep outsb` each -------------- */

void out_str(const char *s);
void out_mem(const char *s, size_t n);
void out_dec(uint64_t v);
void out_hex(uint64_t v, unsigned digits);	/* "0x" + zero-padded hex */
void out_line(void);				/* appends '\n' and sends */
static inline void out_span(struct span s)
{
	out_mem(s.p, s.n);
}

/* ---- main.c ----------------------------------------------------------- */

/* Exit statuses the guest chooses itself (see src/lib.rs). */
#define EXIT_BAD_ARGUMENTS	2	/* unknown action or bad arguments */
#define EXIT_DEVICE_ERROR	3	/* a device timed out or misbehaved */

/* Ends the VM at once through the debug-exit port with `status`. */
__attribute__((noreturn)) void guest_exit(uint8_t status);

/* ---- bootparams.c: the zero page (struct boot_params) ----------------- */

#define E820_MAX_ENTRIES	128

struct e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
};

/* Copies the NUL-terminated command line into buf (at most cap-1 bytes). */
size_t bootparams_cmdline(uint64_t zero_page, char *buf, size_t cap);
/* The number of E820 entries, capped at E820_MAX_ENTRIES. */
unsigned bootparams_e820_count(uint64_t zero_page);
struct e820_entry bootparams_e820_entry(uint64_t zero_page, unsigned index);

/* ---- mptable.c: the Intel MP table ------------------------------------ */

#define MP_MAX_CPUS		256

struct mp_cpus {
	unsigned enabled;		/* enabled processor entries (M) */
	unsigned stored;		/* how many of them are in apic_id[] */
	uint8_t apic_id[MP_MAX_CPUS];
	bool bsp[MP_MAX_CPUS];
};

/* Finds the MP table and lists its enabled processors; false if none. */
bool mptable_find_cpus(struct mp_cpus *cpus);

/* ---- smp.c ------------------------------------------------------------ */

/* Starts every AP in the MP table and prints the "smp: ..." line. */
void smp_report(void);

/* ---- crc32.c: CRC-32/IEEE (the one zlib.crc32 computes) --------------- */

/* Continues a CRC: start with crc = 0, feed the result back in. */
uint32_t crc32_update(uint32_t crc, const void *buf, size_t n);

/* ---- virtio_cmd.c: the virtio actions --------------------------------- */

/* Notes a `virtio_mmio.device=` token; malformed ones are ignored. */
void virtio_mmio_cmdline_device(struct span value);
/* Runs `action` if it is a virtio action; false if it is not one. */
bool virtio_action(struct span action, uint64_t zero_page);

#endif /* KINDLING_GUEST_H */
