/*
 * serial.c: output lines on COM1.
 *
 * Each VM exit costs tens of microseconds on the development hosts, so a
 * line is assembled in a buffer and sent with a single `rep outsb` (the
 * 16550 emulation is always ready), followed by one read of the line status
 * register (see out_line). A line longer than the buffer is cut.
 */
#include "guest.h"

/* Room for a 4 KiB command line plus its "cmdline: " prefix. */
#define LINE_CAP	4200

static char line[LINE_CAP];
static size_t line_len;

void out_mem(const char *s, size_t n)
{
	size_t room = LINE_CAP - 1 - line_len;	/* keep one byte for '\n' */

	if (n > room)
		n = room;
	memcpy(line + line_len, s, n);
	line_len += n;
}

void out_str(const char *s)
{
	out_mem(s, strlen(s));
}

void out_dec(uint64_t v)
{
	char digits[20];
	size_t i = sizeof(digits);

	do {
		digits[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	out_mem(digits + i, sizeof(digits) - i);
}

void out_hex(uint64_t v, unsigned width)
{
	static const char hex[] = "0123456789abcdef";
	char digits[2 + 16];
	unsigned n;

	if (width < 1)
		width = 1;
	if (width > 16)
		width = 16;
	/* The number of significant digits, at least `width`. */
	for (n = 16; n > width && !(v >> (4 * (n - 1))); n--)
		;
	digits[0] = '0';
	digits[1] = 'x';
	for (unsigned i = 0; i < n; i++)
		digits[2 + i] = hex[(v >> (4 * (n - 1 - i))) & 0xf];
	out_mem(digits, 2 + n);
}

void out_line(void)
{
	line[line_len++] = '\n';
	outsb(COM1_PORT, line, line_len);
	/*
	 * Read the line status once, as a UART driver waiting for its
	 * transmitter does. The read leaves the guest, so a VMM that buffers
	 * data-port writes (KVM coalesced PIO) replays the line now rather than
	 * at the guest's next exit: the host sees each line when it is printed.
	 */
	(void)inb(COM1_PORT + 5);
	line_len = 0;
}
