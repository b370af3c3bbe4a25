/*
 * crc32.c: CRC-32/IEEE 802.3 (reflected polynomial 0xedb88320, initial
 * value and final XOR 0xffffffff), the checksum of zlib.crc32 and
 * Python's binascii.crc32, so host-side tests can compare what the guest
 * read with their own files. Four bits at a time from a 16-entry table:
 * small, and fast enough for the few MiB a test reads.
 */
#include "guest.h"

static const uint32_t nibble_table[16] = {
	0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac,
	0x76dc4190, 0x6b6b51f4, 0x4db26158, 0x5005713c,
	0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c,
	0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c,
};

uint32_t crc32_update(uint32_t crc, const void *buf, size_t n)
{
	const uint8_t *p = buf;

	crc = ~crc;
	while (n--) {
		crc ^= *p++;
		crc = (crc >> 4) ^ nibble_table[crc & 0xf];
		crc = (crc >> 4) ^ nibble_table[crc & 0xf];
	}
	return ~crc;
}
