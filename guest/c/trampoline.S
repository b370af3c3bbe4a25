/*
 * trampoline.S: what each application processor runs after INIT/SIPI.
 *
 * smp.c copies these bytes to TRAMPOLINE_ADDR (0x3000) and sends the SIPI
 * with vector 0x03, so an AP starts here in real mode with CS = 0x0300,
 * IP = 0. It counts itself in the word at trampoline_counter (same page,
 * addressed through CS, so the code is position-independent) and halts for
 * good. Kept to a handful of instructions: they run in KVM's emulator.
 *
 * A second SIPI to an AP that already runs or halts here is ignored (by
 * hardware and by KVM), so no AP is counted twice.
 */
	.section .rodata.trampoline, "a"
	.code16
	.globl	trampoline_start, trampoline_end, trampoline_counter
trampoline_start:
	lock incw %cs:(trampoline_counter - trampoline_start)
	cli
1:	hlt
	jmp	1b

	.balign	2
trampoline_counter:
	.word	0
trampoline_end:

	.section .note.GNU-stack, "", @progbits
