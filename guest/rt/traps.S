/* SPDX-License-Identifier: MIT */
/*
 * Exception entry: one stub per CPU exception vector (0-31) pushes a zero
 * where the CPU pushes no error code, then the vector, and hands the frame
 * to rt__trap(), which reports it on the console and exits. Without these a
 * guest fault would be a bare triple fault, with the faulting RIP lost.
 */
	.text
	.macro	stub vec, has_err
	.balign	16
rt__stub_\vec:
	.if	\has_err == 0
	push	$0
	.endif
	push	$\vec
	jmp	rt__trap_common
	.endm

	stub 0,0;  stub 1,0;  stub 2,0;  stub 3,0;  stub 4,0;  stub 5,0
	stub 6,0;  stub 7,0;  stub 8,1;  stub 9,0;  stub 10,1; stub 11,1
	stub 12,1; stub 13,1; stub 14,1; stub 15,0; stub 16,0; stub 17,1
	stub 18,0; stub 19,0; stub 20,0; stub 21,1; stub 22,0; stub 23,0
	stub 24,0; stub 25,0; stub 26,0; stub 27,0; stub 28,0; stub 29,1
	stub 30,1; stub 31,0

rt__trap_common:
	mov	%rsp, %rdi	/* vector, error code, RIP, CS, RFLAGS, RSP, SS */
	and	$-16, %rsp
	call	rt__trap	/* does not return */
1:	hlt
	jmp	1b

	/* The stubs' addresses, for rt__idt_init(). */
	.section .rodata
	.balign	8
	.globl	rt__trap_stubs
rt__trap_stubs:
	.irp	v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.quad	rt__stub_\v
	.endr

	.section .note.GNU-stack, "", @progbits
