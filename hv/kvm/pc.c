// SPDX-License-Identifier: MIT
/* The PC platform around a Linux guest: its devices and their wiring. */
#include <stdio.h>
#include <string.h>

#include "kemari/kemari.h"
#include "kvm.h"
#include "linux_boot.h"

unsigned int kvm_pc__pci_routes(struct kvm_vm *vm, struct kvm_mp_pci_irq *r,
				unsigned int max)
{
	(void)vm;
	(void)r;
	(void)max;
	return 0;
}

int kvm_pc__io(struct kvm_vm *vm, uint16_t port, bool in, void *data,
	       unsigned int size)
{
	(void)vm;
	if (in) {
		memset(data, 0xff, size);
		return 0;
	}
	/* Bring-up only: the THR of COM1 straight to stdout. */
	if (port == 0x3f8) {
		fputc(*(uint8_t *)data, stdout);
		fflush(stdout);
	}
	return 0;
}
