/*
 * smp.c: starts the application processors listed in the MP table and
 * counts how many answer.
 *
 * The real-mode trampoline (trampoline.S) is copied to TRAMPOLINE_ADDR;
 * each AP started there increments a 16-bit counter in the same page and
 * halts. The BSP software-enables its local APIC, sends INIT, SIPI, SIPI to
 * every other enabled processor through the ICR, then polls the counter
 * (natively, in ring 3) for a bounded time.
 */
#include "guest.h"

#define TRAMPOLINE_ADDR		0x3000UL	/* SIPI vector 0x03 */
#define SIPI_VECTOR		(TRAMPOLINE_ADDR >> 12)

/* Local APIC registers (xAPIC, memory-mapped). */
#define LAPIC_ID		0x020	/* bits 31..24: this CPU's APIC id */
#define LAPIC_SVR		0x0f0	/* spurious vector; bit 8 = APIC enable */
#define LAPIC_ICR_LOW		0x300	/* writing it sends the IPI */
#define LAPIC_ICR_HIGH		0x310	/* bits 31..24: destination */
#define SVR_ENABLE		0x1ff	/* enabled, spurious vector 0xff */
#define ICR_INIT		0x00004500	/* INIT, level assert, physical */
#define ICR_STARTUP		0x00004600	/* start-up, level assert, physical */
#define ICR_BUSY		0x00001000	/* delivery status: send pending */

/* Bounds of the polling loops (one `pause` per iteration). The AP wait is
 * generous: about a second of native execution if an AP never answers;
 * answering APs end it in microseconds. */
#define ICR_SPINS		1000000UL
#define AP_WAIT_SPINS		50000000UL

extern const char trampoline_start[], trampoline_end[], trampoline_counter[];

static volatile uint32_t *lapic_reg(unsigned offset)
{
	return (volatile uint32_t *)(LAPIC_ADDR + offset);
}

static void send_ipi(uint8_t apic_id, uint32_t icr_low)
{
	*lapic_reg(LAPIC_ICR_HIGH) = (uint32_t)apic_id << 24;
	*lapic_reg(LAPIC_ICR_LOW) = icr_low;
	for (unsigned long i = 0; i < ICR_SPINS; i++) {
		if (!(*lapic_reg(LAPIC_ICR_LOW) & ICR_BUSY))
			break;
		cpu_relax();
	}
}

void smp_report(void)
{
	static struct mp_cpus cpus;
	volatile uint16_t *counter;
	unsigned sent = 0;
	uint8_t self;

	if (!mptable_find_cpus(&cpus)) {
		out_str("smp: no MP table");
		out_line();
		return;
	}

	memcpy((void *)TRAMPOLINE_ADDR, trampoline_start,
	       (size_t)(trampoline_end - trampoline_start));
	counter = (volatile uint16_t *)(TRAMPOLINE_ADDR +
					(trampoline_counter - trampoline_start));
	*counter = 0;

	*lapic_reg(LAPIC_SVR) = SVR_ENABLE;
	self = (uint8_t)(*lapic_reg(LAPIC_ID) >> 24);
	for (unsigned i = 0; i < cpus.stored; i++) {
		uint8_t id = cpus.apic_id[i];

		if (cpus.bsp[i] || id == self)
			continue;
		send_ipi(id, ICR_INIT);
		send_ipi(id, ICR_STARTUP | SIPI_VECTOR);
		send_ipi(id, ICR_STARTUP | SIPI_VECTOR);
		sent++;
	}

	for (unsigned long i = 0; i < AP_WAIT_SPINS && *counter < sent; i++)
		cpu_relax();

	out_str("smp: ");
	out_dec(1 + *counter);	/* this CPU plus the APs that answered */
	out_str(" of ");
	out_dec(cpus.enabled);
	out_str(" cpus online");
	out_line();
}
