/* SPDX-License-Identifier: MIT */
/*
 * Guest entry. The VMM enters in 64-bit long mode with interrupts off and
 * RDI = the boot info page; everything else is up to us. Memory arrives
 * zeroed, so .bss needs no clearing.
 */
	.section .text.start, "ax", @progbits
	.globl _start
	.type _start, @function
_start:
	/* RSI = vCPU id: the runtime is single-threaded, so only vCPU 0 runs
	 * it; the others park in HLT, which the VMM sees as idle. */
	test	%rsi, %rsi
	jnz	2f
	lea	rt__stack_top(%rip), %rsp
	xor	%ebp, %ebp
	/* Kept for the console and guest_panic(), usable before guest_main. */
	mov	%rdi, rt__bootinfo(%rip)
	call	rt__idt_init	/* a fault reports itself instead of a triple fault */
	mov	rt__bootinfo(%rip), %rdi
	/* RSP is 16-byte aligned: the call leaves the ABI's RSP + 8. */
	call	guest_main
	mov	%eax, %edi
	call	rt__exit	/* OUT to the shutdown port, then HLT */
1:	hlt
	jmp	1b
2:	hlt
	jmp	2b
	.size _start, . - _start

	/*
	 * A page-aligned guard page, unmapped by rt__idt_init(), then the
	 * stack: an overflow faults on the guard page and is reported (#DF on
	 * its own stack) instead of overwriting whatever lies below.
	 */
	.section .bss.stack, "aw", @nobits
	.balign 4096
	.globl rt__stack_guard
rt__stack_guard:
	.skip	4096
rt__stack:
	.skip	65536
	.globl rt__stack_top
rt__stack_top:

	.section .note.GNU-stack, "", @progbits
