// SPDX-License-Identifier: MIT
/*
 * Test guest: faults on purpose; the runtime's exception handlers must report
 * the fault (vector, RIP, CR2, RSP) and exit with status 1 instead of a triple
 * fault. --guest-arg=mode=...:
 *   pf        (default) reads an address the VMM's page tables do not map
 *             (256 GiB): #PF
 *   overflow  recurses until the stack runs into its guard page: the #PF
 *             cannot be delivered on that stack, so #DF on its own stack
 *   badstack  points RSP at unmapped memory and faults: #DF the same way
 */
#include "rt/rt.h"

/* Unbounded on purpose, but hidden from the compiler's recursion check. */
static unsigned long fault__recurse(volatile char *prev, unsigned long n)
{
	volatile char frame[512];

	frame[0] = (char)n;
	frame[511] = prev ? prev[0] : 0;
	if (n == ~0UL)
		return 0;
	return fault__recurse(frame, n + 1) + frame[511];
}

int guest_main(struct kemari_bootinfo *bi)
{
	const char *mode = rt__arg(bi, "mode");
	volatile uint64_t *p = (volatile uint64_t *)0x4000000000ULL;

	if (mode && !strcmp(mode, "overflow"))
		return (int)fault__recurse(0, 0);
	if (mode && !strcmp(mode, "badstack"))
		__asm__ volatile("mov %0, %%rsp\n\tud2"
				 :
				 : "r"(0x4000000000ULL)
				 : "memory");
	return (int)*p;
}
