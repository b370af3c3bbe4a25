/*
 * mptable.c: finds the Intel MultiProcessor table (MP spec 1.4) and lists
 * the enabled processors in it.
 *
 * The MP floating pointer structure ("_MP_", 16-byte aligned, checksummed)
 * is searched where the spec says: the first KiB of the EBDA (its segment
 * is in the BIOS data area at 0x40e), the last KiB of base memory, and the
 * BIOS ROM at 0xf0000..0xfffff. It points at the configuration table
 * ("PCMP"), whose entries follow its 44-byte header. Every read is bounded
 * by the lengths the tables declare.
 */
#include "guest.h"

#define BDA_EBDA_SEGMENT	0x40e	/* u16: EBDA segment */
#define BDA_BASE_MEM_KIB	0x413	/* u16: base memory size in KiB */
#define BASE_MEM_END		0xa0000
#define BIOS_ROM_START		0xf0000
#define BIOS_ROM_END		0x100000

/* MP floating pointer structure. */
#define MPF_SIGNATURE		0x5f504d5f	/* "_MP_" */
#define MPF_PHYSPTR		4	/* u32: configuration table address */
#define MPF_LENGTH		8	/* u8: length in 16-byte units */

/* MP configuration table header. */
#define MPC_SIGNATURE		0x504d4350	/* "PCMP" */
#define MPC_LENGTH		4	/* u16: base table length, header included */
#define MPC_ENTRY_COUNT		34	/* u16 */
#define MPC_HEADER_SIZE		44

/* Entry types and sizes. */
#define MP_PROCESSOR		0
#define MP_PROCESSOR_SIZE	20
#define MP_OTHER_SIZE		8	/* bus, IOAPIC, I/O and local interrupt */
#define MP_LAST_TYPE		4
#define MP_PROC_APIC_ID		1	/* u8 */
#define MP_PROC_FLAGS		3	/* u8 */
#define MP_PROC_ENABLED		0x01
#define MP_PROC_BSP		0x02

static uint8_t checksum(uint64_t addr, uint64_t len)
{
	uint8_t sum = 0;

	while (len--)
		sum += phys_read8(addr++);
	return sum;
}

/* Returns the address of a valid floating pointer in [start, end), or 0. */
static uint64_t scan_floating_pointer(uint64_t start, uint64_t end)
{
	for (uint64_t at = (start + 15) & ~15ULL; at + 16 <= end; at += 16) {
		uint64_t len;

		if (phys_read32(at) != MPF_SIGNATURE)
			continue;
		len = (uint64_t)phys_read8(at + MPF_LENGTH) * 16;
		if (len >= 16 && len <= end - at && checksum(at, len) == 0)
			return at;
	}
	return 0;
}

static uint64_t find_floating_pointer(void)
{
	uint64_t ebda = (uint64_t)phys_read16(BDA_EBDA_SEGMENT) << 4;
	uint64_t base_kib = phys_read16(BDA_BASE_MEM_KIB);
	uint64_t base_end = BASE_MEM_END;
	uint64_t found = 0;

	/* The BIOS data area is optional (VMMs often leave it zero): use its
	 * values only when they look sane. */
	if (ebda >= 0x80000 && ebda < BASE_MEM_END)
		found = scan_floating_pointer(ebda, ebda + 1024);
	if (!found) {
		if (base_kib >= 512 && base_kib <= 640)
			base_end = base_kib * 1024;
		found = scan_floating_pointer(base_end - 1024, base_end);
	}
	if (!found)
		found = scan_floating_pointer(BIOS_ROM_START, BIOS_ROM_END);
	return found;
}

bool mptable_find_cpus(struct mp_cpus *cpus)
{
	uint64_t mpf = find_floating_pointer();
	uint64_t mpc, len, off;
	unsigned count;

	cpus->enabled = 0;
	cpus->stored = 0;
	if (!mpf)
		return false;

	/* A null pointer means a "default configuration": no table to read. */
	mpc = phys_read32(mpf + MPF_PHYSPTR);
	if (mpc == 0 || !phys_range_mapped(mpc, MPC_HEADER_SIZE) ||
	    phys_read32(mpc) != MPC_SIGNATURE)
		return false;
	len = phys_read16(mpc + MPC_LENGTH);
	if (len < MPC_HEADER_SIZE || !phys_range_mapped(mpc, len) ||
	    checksum(mpc, len) != 0)
		return false;

	count = phys_read16(mpc + MPC_ENTRY_COUNT);
	off = MPC_HEADER_SIZE;
	for (unsigned i = 0; i < count && off < len; i++) {
		uint8_t type = phys_read8(mpc + off);
		uint64_t size = type == MP_PROCESSOR ? MP_PROCESSOR_SIZE : MP_OTHER_SIZE;

		if (type > MP_LAST_TYPE || size > len - off)
			break;	/* unknown or truncated entry: stop */
		if (type == MP_PROCESSOR) {
			uint8_t flags = phys_read8(mpc + off + MP_PROC_FLAGS);

			if (flags & MP_PROC_ENABLED) {
				if (cpus->stored < MP_MAX_CPUS) {
					cpus->apic_id[cpus->stored] =
						phys_read8(mpc + off + MP_PROC_APIC_ID);
					cpus->bsp[cpus->stored] = flags & MP_PROC_BSP;
					cpus->stored++;
				}
				cpus->enabled++;
			}
		}
		off += size;
	}
	return true;
}
