// SPDX-License-Identifier: MIT
/* CPU exceptions: an IDT whose gates report the fault and exit (traps.S). */
#include <stdint.h>

#include "rt.h"

struct idt_gate {
	uint16_t off_lo, sel;
	uint8_t ist, type;
	uint16_t off_mid;
	uint32_t off_hi, zero;
} __attribute__((packed));

struct trap_frame {
	uint64_t vector, error, rip, cs, rflags, rsp, ss;
};

extern const uint64_t rt__trap_stubs[32];
static struct idt_gate idt[32] __attribute__((aligned(16)));

static const char *const names[32] = {
	"#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM",
	"#DF", "CSO", "#TS", "#NP", "#SS", "#GP", "#PF", "-",
	"#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "-",	 "-",
	"-",   "-",   "-",   "-",   "-",   "#VC", "#SX", "-",
};

void rt__idt_init(void)
{
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) d = { sizeof(idt) - 1, (uint64_t)idt };

	for (int i = 0; i < 32; i++) {
		uint64_t a = rt__trap_stubs[i];

		idt[i] = (struct idt_gate){
			.off_lo = (uint16_t)a,
			.sel = 0x08,  /* the VMM's 64-bit code segment */
			.type = 0x8e, /* present, DPL 0, interrupt gate */
			.off_mid = (uint16_t)(a >> 16),
			.off_hi = (uint32_t)(a >> 32),
		};
	}
	__asm__ volatile("lidt %0" : : "m"(d));
}

_Noreturn void rt__trap(const struct trap_frame *f);
_Noreturn void rt__trap(const struct trap_frame *f)
{
	uint64_t cr2;

	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	guest_panic(
		"CPU exception %llu (%s) at RIP 0x%llx, error code 0x%llx, CR2 0x%llx, RSP 0x%llx",
		(unsigned long long)f->vector, names[f->vector & 31],
		(unsigned long long)f->rip, (unsigned long long)f->error,
		(unsigned long long)cr2, (unsigned long long)f->rsp);
}
