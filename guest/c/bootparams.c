/*
 * bootparams.c: reads the zero page (struct boot_params) the VMM left at
 * the address it passed in RSI. The VMM is trusted only so far: every
 * address is checked against our identity map and every count is bounded.
 */
#include "guest.h"

/* Offsets in struct boot_params (Linux arch/x86/include/uapi/asm/bootparam.h). */
#define BP_EXT_CMD_LINE_PTR	0x0c8	/* u32: bits 63..32 of the command line */
#define BP_E820_ENTRIES		0x1e8	/* u8 */
#define BP_CMD_LINE_PTR		0x228	/* u32: bits 31..0 of the command line */
#define BP_E820_TABLE		0x2d0	/* struct boot_e820_entry[128] */
#define BP_SIZE			0x1000

#define E820_ENTRY_SIZE		20	/* packed { u64 addr; u64 size; u32 type; } */

static bool zero_page_ok(uint64_t zero_page)
{
	return phys_range_mapped(zero_page, BP_SIZE);
}

size_t bootparams_cmdline(uint64_t zero_page, char *buf, size_t cap)
{
	uint64_t ptr;
	size_t n = 0;

	if (cap == 0)
		return 0;
	if (zero_page_ok(zero_page)) {
		ptr = phys_read32(zero_page + BP_CMD_LINE_PTR) |
		      (uint64_t)phys_read32(zero_page + BP_EXT_CMD_LINE_PTR) << 32;
		if (ptr != 0 && phys_range_mapped(ptr, cap)) {
			const volatile char *src = (const volatile char *)(uintptr_t)ptr;

			while (n < cap - 1 && src[n] != '\0') {
				buf[n] = src[n];
				n++;
			}
		}
	}
	buf[n] = '\0';
	return n;
}

unsigned bootparams_e820_count(uint64_t zero_page)
{
	unsigned count;

	if (!zero_page_ok(zero_page))
		return 0;
	count = phys_read8(zero_page + BP_E820_ENTRIES);
	return count > E820_MAX_ENTRIES ? E820_MAX_ENTRIES : count;
}

struct e820_entry bootparams_e820_entry(uint64_t zero_page, unsigned index)
{
	uint64_t at = zero_page + BP_E820_TABLE + (uint64_t)index * E820_ENTRY_SIZE;
	struct e820_entry e = {
		.addr = phys_read64(at),
		.size = phys_read64(at + 8),
		.type = phys_read32(at + 16),
	};
	return e;
}
