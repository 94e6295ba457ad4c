// SPDX-License-Identifier: MIT
/*
 * CPU exceptions: the guest's own GDT with a TSS, an IDT whose gates report
 * the fault and exit (traps.S), and a guard page below the stack.
 *
 * Why a TSS: a fault whose delivery faults again (a corrupted RSP, a stack
 * overflow) becomes #DF, and a #DF delivered on the same broken stack is a
 * triple fault, which KVM answers by resetting the vCPU: the crash site is
 * lost. #DF, NMI and #MC therefore switch to stacks of their own (IST).
 * #PF and #GP stay on the normal stack: an IST stack is not re-entrant, and a
 * #PF inside the #PF handler must become #DF, not overwrite its own frame.
 * The guard page turns a stack overflow into exactly that #PF -> #DF.
 */
#include <stdint.h>

#include "rt.h"

struct idt_gate {
	uint16_t off_lo, sel;
	uint8_t ist, type;
	uint16_t off_mid;
	uint32_t off_hi, zero;
} __attribute__((packed));

struct tss64 {
	uint32_t reserved0;
	uint64_t rsp[3];
	uint64_t reserved1;
	uint64_t ist[7]; /* ist[0] is IST1 */
	uint64_t reserved2;
	uint16_t reserved3;
	uint16_t iomap_base;
} __attribute__((packed));

struct trap_frame {
	uint64_t vector, error, rip, cs, rflags, rsp, ss;
};

/* Selectors: the same layout as the VMM's boot GDT (abi.h), plus the TSS. */
#define RT_SEL_CODE 0x08
#define RT_SEL_DATA 0x10
#define RT_SEL_TSS 0x18

enum { RT_IST_DF = 1, RT_IST_NMI = 2, RT_IST_MC = 3 };

#define RT_IST_STACK 8192
#define RT_PAGE 4096ULL
#define RT_PTE_P 0x1ULL
#define RT_PTE_RW 0x2ULL
#define RT_PTE_A 0x20ULL
#define RT_PTE_D 0x40ULL
#define RT_PTE_PS 0x80ULL
#define RT_PTE_ADDR 0x000ffffffffff000ULL

extern const uint64_t rt__trap_stubs[32];
/* start.S: the guard page, then the stack, each page-aligned. */
extern char rt__stack_guard[];

static struct idt_gate idt[32] __attribute__((aligned(16)));
static uint64_t gdt[5] __attribute__((aligned(16)));
static struct tss64 tss __attribute__((aligned(16)));
static uint8_t ist_stacks[3][RT_IST_STACK] __attribute__((aligned(16)));
/* Splits the 2 MiB page that holds the guard page into 4 KiB pages. */
static uint64_t guard_pt[512] __attribute__((aligned(4096)));

static const char *const names[32] = {
	"#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM",
	"#DF", "CSO", "#TS", "#NP", "#SS", "#GP", "#PF", "-",
	"#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "-",	 "-",
	"-",   "-",   "-",   "-",   "-",   "#VC", "#SX", "-",
};

static void rt__load_gdt(void)
{
	uint64_t base = (uint64_t)&tss;
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) d = { sizeof(gdt) - 1, (uint64_t)gdt };

	for (int i = 0; i < 3; i++)
		tss.ist[i] = (uint64_t)(ist_stacks[i] + RT_IST_STACK);
	tss.iomap_base = sizeof(tss); /* no I/O bitmap */
	gdt[0] = 0;
	gdt[1] = 0x00af9b000000ffffULL; /* 64-bit code, DPL 0, accessed */
	gdt[2] = 0x00cf93000000ffffULL; /* data, accessed */
	/* 16-byte system descriptor: available 64-bit TSS (type 9). */
	gdt[3] = (sizeof(tss) - 1) | ((base & 0xffffff) << 16) |
		 (0x89ULL << 40) | ((base >> 24 & 0xff) << 56);
	gdt[4] = base >> 32;
	/*
	 * The code and data descriptors equal the VMM's, so the hidden parts
	 * of CS/SS/DS already match; reload them anyway so nothing refers to
	 * the VMM's table after this.
	 */
	__asm__ volatile("lgdt %0\n\t"
			 "mov %1, %%ds\n\t"
			 "mov %1, %%es\n\t"
			 "mov %1, %%ss\n\t"
			 "pushq %2\n\t"
			 "lea 1f(%%rip), %%rax\n\t"
			 "pushq %%rax\n\t"
			 "lretq\n"
			 "1:\n\t"
			 "ltr %w3"
			 :
			 : "m"(d), "r"((uint32_t)RT_SEL_DATA), "i"(RT_SEL_CODE),
			   "r"((uint32_t)RT_SEL_TSS)
			 : "rax", "memory");
}

/*
 * Unmap the page below the stack. The VMM identity-maps RAM with 2 MiB
 * pages; the one holding the guard page is replaced by a 4 KiB table with
 * the same mapping minus that page. A and D are preset so the CPU never
 * writes to the table (its own writes would be dirty pages every epoch).
 */
static void rt__guard_stack(void)
{
	uint64_t va = (uint64_t)rt__stack_guard, cr3, *pml4, *pdpt, *pd;
	uint64_t base;
	unsigned int i;

	__asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
	pml4 = (uint64_t *)(cr3 & RT_PTE_ADDR);
	if (!(pml4[(va >> 39) & 511] & RT_PTE_P))
		return;
	pdpt = (uint64_t *)(pml4[(va >> 39) & 511] & RT_PTE_ADDR);
	if (!(pdpt[(va >> 30) & 511] & RT_PTE_P) ||
	    (pdpt[(va >> 30) & 511] & RT_PTE_PS))
		return;
	pd = (uint64_t *)(pdpt[(va >> 30) & 511] & RT_PTE_ADDR);
	i = (unsigned int)((va >> 21) & 511);
	if ((pd[i] & (RT_PTE_P | RT_PTE_PS)) != (RT_PTE_P | RT_PTE_PS))
		return; /* already split (a restored guest): nothing to do */
	base = pd[i] & RT_PTE_ADDR & ~((2ULL << 20) - 1);
	for (unsigned int j = 0; j < 512; j++)
		guard_pt[j] = (base + j * RT_PAGE) | RT_PTE_P | RT_PTE_RW |
			      RT_PTE_A | RT_PTE_D;
	guard_pt[(va >> 12) & 511] = 0;
	rt__barrier();
	pd[i] = (uint64_t)guard_pt | RT_PTE_P | RT_PTE_RW | RT_PTE_A;
	/* Reloading CR3 drops the 2 MiB translation from the TLB. */
	__asm__ volatile("mov %0, %%cr3" : : "r"(cr3) : "memory");
}

void rt__idt_init(void)
{
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) d = { sizeof(idt) - 1, (uint64_t)idt };

	rt__load_gdt();
	for (int i = 0; i < 32; i++) {
		uint64_t a = rt__trap_stubs[i];

		idt[i] = (struct idt_gate){
			.off_lo = (uint16_t)a,
			.sel = RT_SEL_CODE,
			.type = 0x8e, /* present, DPL 0, interrupt gate */
			.off_mid = (uint16_t)(a >> 16),
			.off_hi = (uint32_t)(a >> 32),
		};
	}
	idt[8].ist = RT_IST_DF;
	idt[2].ist = RT_IST_NMI;
	idt[18].ist = RT_IST_MC;
	__asm__ volatile("lidt %0" : : "m"(d));
	rt__guard_stack();
}

_Noreturn void rt__trap(const struct trap_frame *f);
_Noreturn void rt__trap(const struct trap_frame *f)
{
	uint64_t cr2, stack_lo = (uint64_t)rt__stack_guard;
	const char *why = "";

	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	if (f->vector == 8 && cr2 >= stack_lo && cr2 < stack_lo + RT_PAGE)
		why = " (stack overflow: the fault hit the guard page below the stack)";
	else if (f->vector == 8)
		why = " (a fault while delivering a fault: RSP or the page tables are corrupt)";
	guest_panic(
		"CPU exception %llu (%s) at RIP 0x%llx, error code 0x%llx, CR2 0x%llx, RSP 0x%llx%s",
		(unsigned long long)f->vector, names[f->vector & 31],
		(unsigned long long)f->rip, (unsigned long long)f->error,
		(unsigned long long)cr2, (unsigned long long)f->rsp, why);
}
