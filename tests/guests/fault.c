// SPDX-License-Identifier: MIT
/*
 * Test guest: reads an address the VMM's page tables do not map (256 GiB),
 * so the CPU raises #PF; the runtime's exception handler must report it
 * (vector, RIP, CR2) and exit with status 1 instead of a triple fault.
 */
#include "rt/rt.h"

int guest_main(struct kemari_bootinfo *bi)
{
	volatile uint64_t *p = (volatile uint64_t *)0x4000000000ULL;

	(void)bi;
	return (int)*p;
}
