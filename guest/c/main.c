/*
 * main.c: the ring-3 main program of the Kindling test guest.
 *
 * Reads the command line from the zero page, runs the actions listed in
 * `kindling.test=` in order, then exits through the debug-exit port (or the
 * i8042 reset) as `kindling.exit=` says. The modes and their output lines
 * are documented in src/lib.rs, which the VMM's tests rely on.
 */
#include "guest.h"
#include "virtio.h"

#define CMDLINE_CAP	4096

extern char __bss_start[], __bss_end[];

struct exit_request {
	bool reset;		/* kindling.exit=reset */
	uint8_t status;		/* kindling.exit=N */
};

static char cmdline[CMDLINE_CAP];

static __attribute__((noreturn)) void halt_forever(void)
{
	for (;;)
		cpu_relax();
}

static __attribute__((noreturn)) void exit_vm(struct exit_request req)
{
	if (!req.reset) {
		uint64_t start;

		outb(DEBUG_EXIT_PORT, req.status);
		/* The VMM stops the vCPUs a moment after the write: give it
		 * about a second (2^31 TSC cycles) before concluding that it has
		 * no debug-exit device (the device is opt-in). Then say so and
		 * reset, rather than hang. */
		start = rdtsc();
		while (rdtsc() - start < (1ULL << 31))
			cpu_relax();
		out_str("exit: no debug-exit device at port 0xf4, status ");
		out_dec(req.status);
		out_str(" lost; resetting");
		out_line();
	}
	outb(I8042_COMMAND_PORT, I8042_RESET);
	halt_forever();		/* the VMM should not have let us run on */
}

void guest_exit(uint8_t status)
{
	exit_vm((struct exit_request){ false, status });
}

/* ---- actions ---------------------------------------------------------- */

static void action_hello(void)
{
	out_str("Hello from the Kindling test guest!");
	out_line();
}

static void action_cmdline(size_t len)
{
	out_str("cmdline: ");
	out_mem(cmdline, len);
	out_line();
}

static void action_e820(uint64_t zero_page)
{
	unsigned count = bootparams_e820_count(zero_page);

	out_str("e820: ");
	out_dec(count);
	out_str(" entries");
	out_line();
	for (unsigned i = 0; i < count; i++) {
		struct e820_entry e = bootparams_e820_entry(zero_page, i);

		out_str("e820: addr=");
		out_hex(e.addr, 16);
		out_str(" size=");
		out_hex(e.size, 16);
		out_str(" type=");
		out_dec(e.type);
		out_line();
	}
}

static void action_timer(void)
{
	*(volatile uint8_t *)BOOT_TIMER_ADDR = BOOT_TIMER_MAGIC;
	out_str("boot-timer: signalled");
	out_line();
}

static __attribute__((noreturn)) void action_pio_loop(void)
{
	for (;;)
		outb(BENCH_PORT, 0);
}

/* Runs one action; returns false if it is unknown. */
static bool run_action(struct span action, uint64_t zero_page, size_t cmdline_len)
{
	if (span_eq(action, "hello"))
		action_hello();
	else if (span_eq(action, "cmdline"))
		action_cmdline(cmdline_len);
	else if (span_eq(action, "e820"))
		action_e820(zero_page);
	else if (span_eq(action, "smp"))
		smp_report();
	else if (span_eq(action, "timer"))
		action_timer();
	else if (span_eq(action, "pio-loop"))
		action_pio_loop();
	else
		return virtio_action(action, zero_page);
	return true;
}

/* Entered from start.S in ring 3 with the zero page address from RSI. */
__attribute__((noreturn)) void guest_main(uint64_t zero_page)
{
	struct span actions = { "hello", 5 };
	struct exit_request exit_req = { false, 0 };
	struct span rest, action;
	size_t len;

	/* The ELF loader need not clear the bss: do it before anything else. */
	memset(__bss_start, 0, (size_t)(__bss_end - __bss_start));

	len = bootparams_cmdline(zero_page, cmdline, sizeof(cmdline));

	/* Tokens are whitespace-separated; unknown ones are ignored. */
	rest = (struct span){ cmdline, len };
	while (rest.n) {
		struct span token = next_piece(&rest, is_space);
		uint8_t status;

		if (take_prefix(&token, "kindling.test=")) {
			actions = token;
		} else if (take_prefix(&token, "kindling.exit=")) {
			if (span_eq(token, "reset")) {
				exit_req.reset = true;
			} else if (parse_u8(token, &status)) {
				exit_req.reset = false;
				exit_req.status = status;
			}
		} else if (take_prefix(&token, "virtio_mmio.device=")) {
			virtio_mmio_cmdline_device(token);
		} else if (take_prefix(&token, "kindling.event_idx=")) {
			if (span_eq(token, "0"))
				virtio_set_event_idx(false);
			else if (span_eq(token, "1"))
				virtio_set_event_idx(true);
		}
	}

	rest = actions;
	while (rest.n) {
		action = next_piece(&rest, is_comma);
		if (action.n == 0)
			continue;
		if (!run_action(action, zero_page, len)) {
			out_str("unknown action: ");
			out_mem(action.p, action.n);
			out_line();
			guest_exit(EXIT_BAD_ARGUMENTS);
		}
	}
	exit_vm(exit_req);
}
