/*
 * start.S: the ring-0 prologue of the Kindling test guest.
 *
 * The VMM enters _start in 64-bit mode per the Linux x86 64-bit boot
 * protocol: paging on with its own identity map, RSI = the zero page
 * (struct boot_params), interrupts off. On the hosts Kindling is developed
 * on, every ring-0 instruction goes through KVM's instruction emulator
 * (about 0.5 us each), so ring 0 does only the minimum:
 *
 *   1. load our GDT (it has the ring-3 code and data segments);
 *   2. load CR3 with page tables built at link time (below) whose every
 *      level has the U/S bit set, so ring 3 may touch all of 0..4 GiB;
 *   3. IRETQ to ring 3 through a frame built at link time, with IOPL=3
 *      (ring 3 may do port I/O) and IF=0.
 *
 * That is five instructions. RSI is not touched, so it still holds the
 * zero page address when ring 3 starts at user_entry. There is no IDT: any
 * exception is a triple fault, which the VMM reports.
 *
 * The VMM must not set CR4.SMEP or CR4.SMAP (the Linux boot protocol does
 * not): this code and its stack live in user-accessible pages.
 */

#define KERNEL_CS	0x08
#define KERNEL_DS	0x10
#define USER_DS		(0x18 | 3)
#define USER_CS		(0x20 | 3)
#define USER_RFLAGS	0x3002		/* IOPL=3, reserved bit 1, IF=0 */

#define PTE_P		0x001		/* present */
#define PTE_RW		0x002		/* writable */
#define PTE_US		0x004		/* user-accessible */
#define PTE_PWT		0x008		/* write-through */
#define PTE_PCD		0x010		/* cache disable */
#define PTE_PS		0x080		/* 2 MiB page (in a page directory) */
#define PTE_TABLE	(PTE_P | PTE_RW | PTE_US)
#define PTE_RAM		(PTE_P | PTE_RW | PTE_US | PTE_PS)
#define PTE_MMIO	(PTE_RAM | PTE_PWT | PTE_PCD)

	.section .text.start, "ax"
	.code64
	.globl	_start
_start:
	lgdt	gdt_desc(%rip)
	mov	$pml4, %eax
	mov	%rax, %cr3
	lea	iret_frame(%rip), %rsp
	iretq

/* Ring 3 from here on: native speed. */
	.text
user_entry:
	mov	%rsi, %rdi		/* guest_main(zero_page) */
	call	guest_main
1:	pause				/* guest_main does not return */
	jmp	1b

	.data
	.balign	8
gdt:
	.quad	0			/* null */
	.quad	0x00af9b000000ffff	/* 0x08: kernel code, 64-bit, DPL 0 */
	.quad	0x00cf93000000ffff	/* 0x10: kernel data, DPL 0 */
	.quad	0x00cff3000000ffff	/* 0x18: user data, DPL 3 */
	.quad	0x00affb000000ffff	/* 0x20: user code, 64-bit, DPL 3 */
gdt_end:
	/* (The accessed bits are preset so the CPU never writes them.) */

	.balign	8
	.word	0, 0, 0			/* aligns the base of gdt_desc */
gdt_desc:
	.word	gdt_end - gdt - 1
	.quad	gdt

	.balign	8
iret_frame:				/* what IRETQ pops, lowest address first */
	.quad	user_entry		/* RIP */
	.quad	USER_CS			/* CS */
	.quad	USER_RFLAGS		/* RFLAGS */
	.quad	stack_top		/* RSP */
	.quad	USER_DS			/* SS */

/*
 * Identity map of 0..4 GiB with 2 MiB pages: one PML4 entry, four PDPT
 * entries, four page directories. The MMIO gap (3..4 GiB: boot timer,
 * IOAPIC, local APIC) is mapped uncached. Nothing here needs 1 GiB pages.
 */
	.section .data.pagetables, "aw"
	.balign	4096
pml4:
	.quad	pdpt + PTE_TABLE
	.fill	511, 8, 0
pdpt:
	.quad	pd + 0x0000 + PTE_TABLE
	.quad	pd + 0x1000 + PTE_TABLE
	.quad	pd + 0x2000 + PTE_TABLE
	.quad	pd + 0x3000 + PTE_TABLE
	.fill	508, 8, 0
pd:
	.set	page, 0
	.rept	3 * 512			/* 0..3 GiB: RAM */
	.quad	page + PTE_RAM
	.set	page, page + 0x200000
	.endr
	.rept	512			/* 3..4 GiB: the MMIO gap */
	.quad	page + PTE_MMIO
	.set	page, page + 0x200000
	.endr

/* The ring-3 stack (not cleared with the bss). */
	.section .stack, "aw", @nobits
	.balign	16
	.space	16384
stack_top:

	.section .note.GNU-stack, "", @progbits
