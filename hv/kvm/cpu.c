// SPDX-License-Identifier: MIT
/*
 * vCPUs: creation, the run loop (a plain while around KVM_RUN with a switch
 * on the exit reason), the pause protocol and state save/restore.
 */
#include <asm/processor-flags.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kemari/buf.h"
#include "kemari/kemari.h"
#include "kemari/testcfg.h"
#include "kvm.h"

#define KVM_SIG_KICK (SIGRTMIN + 0)

/* The vCPU this thread runs, so a signal can make its KVM_RUN return. */
static __thread struct kvm_vcpu *cur_vcpu;
static __thread struct kvm_run *volatile cur_run;

static void kvm_cpu__sig_kick(int sig)
{
	(void)sig;
	/* Either KVM_RUN returns -EINTR, or the next one does at once. */
	if (cur_run)
		cur_run->immediate_exit = 1;
}

static int kvm_cpu__setup_signals(void)
{
	struct sigaction sa;
	sigset_t set;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kvm_cpu__sig_kick;
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: the idle poll() must return on a kick too. */
	if (sigaction(KVM_SIG_KICK, &sa, NULL) < 0)
		return -errno;
	sigemptyset(&set);
	sigaddset(&set, KVM_SIG_KICK);
	return -pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

/* XCR0 components that come only together (KVM's XSETBV refuses others). */
static const uint64_t kvm_xcr0_groups[] = {
	0x3ULL << 3,  /* MPX: BNDREGS, BNDCSR */
	0x7ULL << 5,  /* AVX-512: opmask, ZMM_Hi256, Hi16_ZMM */
	0x3ULL << 17, /* AMX: XTILECFG, XTILEDATA */
};

static struct kvm_cpuid_entry2 *kvm_cpuid__find(struct kvm_cpuid2 *c,
						uint32_t fn, uint32_t idx)
{
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == fn && c->entries[i].index == idx)
			return &c->entries[i];
	return NULL;
}

/*
 * The XCR0 a guest gets from the start: every state component CPUID leaf
 * 0xD advertises whose feature CPUID also offers (as Linux enables them:
 * AVX, MPX, AVX-512, PKU; KVM without nested paging drops PKU but keeps
 * PKRU in leaf 0xD), trimmed to a set XSETBV accepts (whole groups; AVX
 * needs SSE, AVX-512 needs AVX). Leaf 0xD.0 is trimmed the same way, its
 * ECX (the XSAVE area for all of them) recomputed from the subleaves. 0:
 * the guest has no XSAVE.
 */
uint64_t kvm_cpuid__xcr0(struct kvm_cpuid2 *c)
{
	static const struct {
		uint32_t leaf, bit; /* leaf 1 or 7, subleaf 0 */
		bool ecx;
		uint64_t xcr0;
	} need[] = {
		{ 1, 28, true, 0x4 },	   /* AVX: YMM */
		{ 7, 14, false, 0x18 },	   /* MPX: BNDREGS, BNDCSR */
		{ 7, 16, false, 0xe0 },	   /* AVX-512F */
		{ 7, 3, true, 0x200 },	   /* PKU: PKRU */
	};
	struct kvm_cpuid_entry2 *one = kvm_cpuid__find(c, 1, 0);
	struct kvm_cpuid_entry2 *seven = kvm_cpuid__find(c, 7, 0);
	struct kvm_cpuid_entry2 *d = kvm_cpuid__find(c, 0xd, 0);
	uint64_t xcr0;
	uint32_t size = 512 + 64; /* legacy area and XSAVE header */

	if (!one || !(one->ecx & (1U << 26)) || !d)
		return 0;
	xcr0 = (d->eax | (uint64_t)d->edx << 32) | 0x3;
	for (size_t i = 0; i < KEMARI_ARRAY_SIZE(need); i++) {
		const struct kvm_cpuid_entry2 *l =
			need[i].leaf == 1 ? one : seven;
		uint32_t reg = !l ? 0 : need[i].ecx ? l->ecx : l->ebx;

		if (!(reg & 1U << need[i].bit))
			xcr0 &= ~need[i].xcr0;
	}
	for (unsigned int b = 2; b < 64; b++) {
		const struct kvm_cpuid_entry2 *s = kvm_cpuid__find(c, 0xd, b);

		if (!s || !s->eax) /* no subleaf saying where it goes */
			xcr0 &= ~(1ULL << b);
	}
	for (size_t i = 0; i < KEMARI_ARRAY_SIZE(kvm_xcr0_groups); i++)
		if ((xcr0 & kvm_xcr0_groups[i]) != kvm_xcr0_groups[i])
			xcr0 &= ~kvm_xcr0_groups[i];
	if (!(xcr0 & 0x4))
		xcr0 &= ~kvm_xcr0_groups[1];
	for (unsigned int b = 2; b < 64; b++) {
		const struct kvm_cpuid_entry2 *s = kvm_cpuid__find(c, 0xd, b);

		if (xcr0 & 1ULL << b)
			size = KEMARI_MAX(size, s->ebx + s->eax);
	}
	d->eax = (uint32_t)xcr0;
	d->edx = (uint32_t)(xcr0 >> 32);
	d->ecx = size;
	return xcr0;
}

/*
 * Set XCR0 before the guest runs, to what it will set itself (Linux
 * enables every component CPUID offers). KVM recomputes CPUID 0xD.0 EBX
 * (the XSAVE area for the current XCR0) when a guest's XSETBV exits to
 * it; where that exit never comes (nested under QEMU TCG, whose SVM does
 * not intercept XSETBV) KVM keeps XCR0 = x87 from reset and EBX at 576,
 * Linux warns "XSAVE consistency problem: size 2696 != kernel_size 576"
 * and turns XSAVE off (no AVX for its programs). Set here, KVM's XCR0 is
 * the guest's from the first instruction; a guest's own XSETBV to the
 * same value changes nothing. XCR0 matters only once the guest sets
 * CR4.OSXSAVE, and INIT leaves it alone: the other vCPUs keep it too.
 */
static int kvm_cpu__set_xcr0(struct kvm_vcpu *vcpu, uint64_t xcr0)
{
	struct kvm_xcrs x;

	if (!xcr0 ||
	    ioctl(vcpu->vm->sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) <= 0)
		return 0;
	memset(&x, 0, sizeof(x));
	x.nr_xcrs = 1;
	x.xcrs[0].xcr = 0;
	x.xcrs[0].value = xcr0;
	if (ioctl(vcpu->fd, KVM_SET_XCRS, &x) < 0)
		return kemari_err(-errno, "KVM_SET_XCRS XCR0=0x%llx: %s",
				  (unsigned long long)xcr0, strerror(errno));
	return 0;
}

/*
 * MTRRs as a PC's firmware leaves them: enabled, write-back by
 * default, the VGA window 0xa0000-0xbffff and the 32-bit PCI hole (3-4
 * GiB: IOAPIC, LAPIC, BARs) uncached. With MTRRs off, Linux 6.1 also
 * leaves PAT off ("x86/PAT: MTRRs disabled, skipping PAT initialization
 * too"): no write-combining. Only for a PC: a freestanding guest never
 * looks at them.
 */
static int kvm_cpu__set_mtrrs(struct kvm_vcpu *vcpu, struct kvm_cpuid2 *c)
{
	const struct kvm_cpuid_entry2 *one = kvm_cpuid__find(c, 1, 0);
	const struct kvm_cpuid_entry2 *ext = kvm_cpuid__find(c, 0x80000000, 0);
	const struct kvm_cpuid_entry2 *pa = kvm_cpuid__find(c, 0x80000008, 0);
	const uint64_t wb = 0x0606060606060606ULL, gib = 1ULL << 30;
	unsigned int bits = 36;
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[16];
	} m;
	uint32_t n = 0;
	int set;

	if (!one || !(one->edx & (1U << 12))) /* no MTRRs */
		return 0;
	if (ext && ext->eax >= 0x80000008 && pa && (pa->eax & 0xff))
		bits = pa->eax & 0xff;
	memset(&m, 0, sizeof(m));
	m.e[n].index = 0x250; /* 64K fixed: 0-0x7ffff */
	m.e[n++].data = wb;
	m.e[n].index = 0x258; /* 16K fixed: 0x80000-0x9ffff */
	m.e[n++].data = wb;
	m.e[n].index = 0x259; /* 16K fixed: 0xa0000-0xbffff, UC */
	m.e[n++].data = 0;
	for (uint32_t i = 0x268; i <= 0x26f; i++) { /* 4K fixed: 0xc0000- */
		m.e[n].index = i;
		m.e[n++].data = wb;
	}
	m.e[n].index = 0x200; /* variable range 0 base: the hole, UC */
	m.e[n++].data = 3 * gib;
	m.e[n].index = 0x201; /* its mask, valid */
	m.e[n++].data = (~(gib - 1) & ((1ULL << bits) - 1)) | 1ULL << 11;
	m.e[n].index = 0x2ff; /* MTRRdefType: enabled, fixed on, WB */
	m.e[n++].data = 1ULL << 11 | 1ULL << 10 | 6;
	m.hdr.nmsrs = n;
	set = ioctl(vcpu->fd, KVM_SET_MSRS, &m);
	if (set < 0)
		return kemari_err(-errno, "vCPU %u MTRRs: %s", vcpu->id,
				  strerror(errno));
	if ((uint32_t)set != n)
		return kemari_err(
			-EINVAL, "vCPU %u MTRRs: KVM refused MSR 0x%x = 0x%llx",
			vcpu->id, m.e[set].index,
			(unsigned long long)m.e[set].data);
	return 0;
}

/*
 * The guest's CPUID made from KVM's supported one, for vCPU id: its own
 * APIC ID (the MP table lists them 0..n-1) and topology ID, the hypervisor
 * bit, TSC-deadline where the in-kernel LAPIC has it, and no 5-level paging
 * unless la57.
 */
void kvm_cpuid__adjust(struct kvm_cpuid2 *c, unsigned int id, bool deadline,
		       bool la57)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *en = &c->entries[i];

		if (en->function == 1) {
			en->ebx = (en->ebx & 0x00ffffffU) | id << 24;
			/* "Running on a hypervisor": without it a kernel
			 * never looks at KVM's leaves (no kvmclock). */
			en->ecx |= 1U << 31;
			/* The in-kernel LAPIC's TSC-deadline mode, which KVM
			 * leaves out of the supported CPUID (it needs the
			 * irqchip). Without it Linux calibrates the LAPIC
			 * timer against the PIT, which a loaded or nested
			 * host can fail ("APIC timer disabled due to
			 * verification failure"). */
			if (deadline)
				en->ecx |= 1U << 24;
		} else if (en->function == 7 && en->index == 0 && !la57) {
			/* No 5-level paging (LA57): the guest's CPU must be
			 * one the secondary's host can give it too, and few
			 * hosts have LA57 (QEMU's CPU models leave it out
			 * as well). Inside the emulated test VM a Linux guest
			 * with LA57 crashed now and then (docs/testing.md). */
			en->ecx &= ~(1U << 16);
		} else if (en->function == 0xb || en->function == 0x1f)
			en->edx = id;
	}
}

static int kvm_cpu__set_cpuid(struct kvm_vcpu *vcpu)
{
	int n = 128, err;
	struct kvm_cpuid2 *c;
	uint64_t xcr0;
	bool deadline =
		vcpu->vm->pc && ioctl(vcpu->vm->sys_fd, KVM_CHECK_EXTENSION,
				      KVM_CAP_TSC_DEADLINE_TIMER) > 0;

	for (;;) {
		c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		if (!c)
			return -ENOMEM;
		c->nent = n;
		if (ioctl(vcpu->vm->sys_fd, KVM_GET_SUPPORTED_CPUID, c) == 0)
			break;
		err = -errno;
		free(c);
		if (err != -E2BIG || n >= 4096)
			return kemari_err(err, "KVM_GET_SUPPORTED_CPUID: %s",
					  strerror(-err));
		n *= 2;
	}
	kvm_cpuid__adjust(c, vcpu->id, deadline,
			  kemari_testcfg__get()->kvm_la57);
	xcr0 = kvm_cpuid__xcr0(c);
	err = ioctl(vcpu->fd, KVM_SET_CPUID2, c) < 0 ? -errno : 0;
	if (err) {
		free(c);
		return kemari_err(err, "KVM_SET_CPUID2: %s", strerror(-err));
	}
	/* After the CPUID: KVM checks XCR0 and MTRRs against it. */
	err = kvm_cpu__set_xcr0(vcpu, xcr0);
	if (!err && vcpu->vm->pc)
		err = kvm_cpu__set_mtrrs(vcpu, c);
	free(c);
	return err;
}

int kvm_cpu__create(struct kvm_vm *vm, unsigned int id)
{
	struct kvm_vcpu *vcpu = &vm->vcpus[id];
	void *run;
	int err;

	vcpu->vm = vm;
	vcpu->id = id;
	vcpu->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, id);
	if (vcpu->fd < 0)
		return kemari_err(-errno, "KVM_CREATE_VCPU %u: %s", id,
				  strerror(errno));
	run = mmap(NULL, (size_t)vm->vcpu_mmap_size, PROT_READ | PROT_WRITE,
		   MAP_SHARED, vcpu->fd, 0);
	if (run == MAP_FAILED) {
		err = kemari_err(-errno, "mmap of vCPU %u run area: %s", id,
				 strerror(errno));
		goto err_close;
	}
	vcpu->run = run;
	err = kvm_cpu__set_cpuid(vcpu);
	if (err)
		goto err_unmap;
	err = kvm_vm__map_ring(vm, vcpu);
	if (err)
		goto err_unmap;
	return 0;

err_unmap:
	munmap(vcpu->run, (size_t)vm->vcpu_mmap_size);
	vcpu->run = NULL;
err_close:
	close(vcpu->fd);
	vcpu->fd = -1;
	return err;
}

void kvm_cpu__destroy(struct kvm_vcpu *vcpu)
{
	if (vcpu->vm)
		kvm_vm__unmap_ring(vcpu->vm, vcpu);
	if (vcpu->run)
		munmap(vcpu->run, (size_t)vcpu->vm->vcpu_mmap_size);
	if (vcpu->fd >= 0)
		close(vcpu->fd);
	vcpu->run = NULL;
	vcpu->fd = -1;
}

static void seg_flat(struct kvm_segment *s, uint16_t sel, uint8_t type)
{
	memset(s, 0, sizeof(*s));
	s->selector = sel;
	s->limit = 0xffffffff;
	s->type = type;
	s->present = 1;
	s->s = 1;
	s->g = 1;
	s->db = 1;
}

int kvm_cpu__set_boot_state(struct kvm_vcpu *vcpu,
			    const struct kvm_boot_entry *b)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0)
		return kemari_err(-errno, "KVM_GET_SREGS: %s", strerror(errno));
	seg_flat(&sregs.cs, b->cs, 11);
	sregs.cs.l = 1;
	sregs.cs.db = 0;
	seg_flat(&sregs.ds, b->ds, 3);
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	if (b->tr) {
		memset(&sregs.tr, 0, sizeof(sregs.tr));
		sregs.tr.selector = b->tr;
		sregs.tr.limit = 0x67;
		sregs.tr.type = 11;
		sregs.tr.present = 1;
		sregs.ldt.unusable = 1;
	}
	sregs.gdt.base = b->gdt_base;
	sregs.gdt.limit = b->gdt_limit;
	sregs.idt.base = 0;
	sregs.idt.limit = 0;
	sregs.cr3 = b->cr3;
	sregs.cr4 = 0x20;	/* PAE */
	sregs.cr0 = 0x80050033; /* PG WP NE ET MP PE */
	sregs.efer = 0x500;	/* LME LMA */
	if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0)
		return kemari_err(-errno, "KVM_SET_SREGS: %s", strerror(errno));

	memset(&regs, 0, sizeof(regs));
	regs.rip = b->rip;
	regs.rdi = b->rdi;
	regs.rsi = b->rsi;
	regs.rflags = 0x2; /* interrupts off */
	if (ioctl(vcpu->fd, KVM_SET_REGS, &regs) < 0)
		return kemari_err(-errno, "KVM_SET_REGS: %s", strerror(errno));
	return 0;
}

/*
 * Finish the last exit: an OUT is complete only once userspace re-enters
 * KVM_RUN. immediate_exit makes KVM_RUN complete it and return -EINTR
 * without running guest code, so a snapshot taken now never replays it.
 */
static void kvm_cpu__complete_exit(struct kvm_vcpu *vcpu)
{
	vcpu->run->immediate_exit = 1;
	while (ioctl(vcpu->fd, KVM_RUN, 0) == 0)
		;
	vcpu->run->immediate_exit = 0;
}

/* Park this vCPU while a pause is requested. */
static void kvm_cpu__park(struct kvm_vcpu *vcpu, bool complete)
{
	struct kvm_vm *vm = vcpu->vm;

	if (complete)
		kvm_cpu__complete_exit(vcpu);
	pthread_mutex_lock(&vm->pause_lock);
	vcpu->parked = true;
	vm->nparked++;
	pthread_cond_broadcast(&vm->pause_cond);
	while (atomic_load(&vm->pause_req) && !atomic_load(&vm->stop))
		pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
	vm->nparked--;
	vcpu->parked = false;
	pthread_mutex_unlock(&vm->pause_lock);
}

/*
 * Take the device lock from a vCPU thread. A vCPU that waits here while
 * another one pauses the VM parks mid-exit: its OUT is then either replayed
 * after a restore or its ring requests are re-issued by reattach.
 */
static void kvm_cpu__lock(struct kvm_vcpu *vcpu)
{
	struct kvm_vm *vm = vcpu->vm;

	while (pthread_mutex_trylock(&vm->lock)) {
		if (atomic_load(&vm->pause_req))
			kvm_cpu__park(vcpu, false);
		else
			sched_yield();
	}
}

int kvm_cpu__pause(struct kvm_vm *vm)
{
	struct kvm_vcpu *self =
		cur_vcpu && cur_vcpu->vm == vm ? cur_vcpu : NULL;
	unsigned int want = 0;

	if (self)
		kvm_cpu__complete_exit(self);
	pthread_mutex_lock(&vm->pause_lock);
	atomic_store(&vm->pause_req, true);
	for (unsigned int i = 0; i < vm->ncpus; i++) {
		struct kvm_vcpu *v = &vm->vcpus[i];

		if (v == self || !v->thread_started)
			continue;
		want++;
		pthread_kill(v->thread, KVM_SIG_KICK);
	}
	while (vm->nparked < want && !atomic_load(&vm->stop))
		pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
	pthread_mutex_unlock(&vm->pause_lock);
	return 0;
}

int kvm_cpu__resume(struct kvm_vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	atomic_store(&vm->pause_req, false);
	pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
	return 0;
}

static int kvm_cpu__tick(struct kvm_vcpu *vcpu)
{
	struct kvm_vm *vm = vcpu->vm;
	const struct kemari_hv_hooks *h = &vm->cfg.hooks;
	uint64_t now;
	int err = 0;

	if (vcpu->id != 0 || !h->tick)
		return 0;
	now = kemari_now_ns();
	if (now < vm->next_tick_ns)
		return 0;
	vm->next_tick_ns = now + (uint64_t)h->tick_ms * 1000000ULL;
	kvm_cpu__lock(vcpu);
	err = h->tick(h->ctx);
	pthread_mutex_unlock(&vm->lock);
	return err;
}

/*
 * Guest-virtual to guest-physical through the tables at CR3: five levels
 * where CR4.LA57 is set, else four. The entries read on the way go into
 * trail ("L5=... L4=... ...").
 */
static bool kvm_cpu__walk(struct kvm_vm *vm, const struct kvm_sregs *s,
			  uint64_t va, uint64_t *pa, char *trail, size_t cap)
{
	uint64_t table = s->cr3 & 0x000ffffffffff000ULL;
	size_t used = 0;

	for (int level = s->cr4 & X86_CR4_LA57 ? 4 : 3; level >= 0; level--) {
		uint64_t *t = kvm_vm__gpa(vm, table, 4096);
		uint64_t e = t ? t[(va >> (12 + 9 * level)) & 511] : 0;

		used += (size_t)snprintf(trail + used, cap - used, " L%d=%llx",
					 level + 1, (unsigned long long)e);
		if (used >= cap)
			used = cap - 1;
		if (!t || !(e & 1))
			return false;
		/* A 2 MiB or 1 GiB page. */
		if ((level == 1 || level == 2) && (e & 0x80)) {
			uint64_t span = 1ULL << (12 + 9 * level);

			*pa = (e & 0x000ffffffffff000ULL & ~(span - 1)) |
			      (va & (span - 1));
			return true;
		}
		table = e & 0x000ffffffffff000ULL;
	}
	*pa = table | (va & 4095);
	return true;
}

/*
 * After a triple fault: starting from the registers last saved or loaded,
 * check what exception delivery needs (IDT, GDT, TSS with its IST stacks,
 * the stack) is mapped and sane in guest RAM now, so a crash can be told
 * apart as the guest's doing (its tables overwritten) or not.
 */
static void kvm_cpu__postmortem(struct kvm_vcpu *vcpu)
{
	const struct kvm_sregs *s = &vcpu->last_sregs;
	const struct kvm_regs *r = &vcpu->last_regs;
	struct {
		const char *what;
		uint64_t va;
	} at[] = {
		{ "RIP", r->rip },	{ "RSP", r->rsp },
		{ "IDT", s->idt.base }, { "GDT", s->gdt.base },
		{ "TSS", s->tr.base },
	};
	char trail[160];
	uint64_t pa;

	if (!vcpu->have_last)
		return;
	kemari_warn(
		"post-mortem of vCPU %u from its last checkpoint: RIP %llx RSP %llx CR0 %llx CR3 %llx CR4 %llx EFER %llx IDT %llx/%x GDT %llx/%x TR %x@%llx",
		vcpu->id, (unsigned long long)r->rip,
		(unsigned long long)r->rsp, (unsigned long long)s->cr0,
		(unsigned long long)s->cr3, (unsigned long long)s->cr4,
		(unsigned long long)s->efer, (unsigned long long)s->idt.base,
		s->idt.limit, (unsigned long long)s->gdt.base, s->gdt.limit,
		s->tr.selector, (unsigned long long)s->tr.base);
	for (size_t i = 0; i < KEMARI_ARRAY_SIZE(at); i++) {
		bool ok = kvm_cpu__walk(vcpu->vm, s, at[i].va, &pa, trail,
					sizeof(trail));

		kemari_warn("post-mortem: %s %llx -> %s%s", at[i].what,
			    (unsigned long long)at[i].va,
			    ok ? "mapped:" : "NOT MAPPED:", trail);
	}
	/* The gates exception delivery takes: #DF, #GP, #PF. */
	for (unsigned int v = 8; v <= 14; v += v == 8 ? 5 : 1) {
		const uint64_t *g = NULL;

		if (kvm_cpu__walk(vcpu->vm, s, s->idt.base + v * 16, &pa, trail,
				  sizeof(trail)))
			g = kvm_vm__gpa(vcpu->vm, pa, 16);
		if (g)
			kemari_warn(
				"post-mortem: IDT gate %u = %016llx %016llx", v,
				(unsigned long long)g[1],
				(unsigned long long)g[0]);
	}
	if (kvm_cpu__walk(vcpu->vm, s, s->tr.base, &pa, trail, sizeof(trail))) {
		const uint64_t *t = kvm_vm__gpa(vcpu->vm, pa, 104);

		/* IST1-3 at byte offsets 36, 44, 52 (unaligned in the TSS). */
		if (t) {
			uint64_t ist[3];

			memcpy(ist, (const uint8_t *)t + 36, sizeof(ist));
			kemari_warn(
				"post-mortem: TSS IST1 %llx IST2 %llx IST3 %llx",
				(unsigned long long)ist[0],
				(unsigned long long)ist[1],
				(unsigned long long)ist[2]);
		}
	}
	if (kvm_cpu__walk(vcpu->vm, s, r->rsp & ~7ULL, &pa, trail,
			  sizeof(trail))) {
		const uint64_t *st = kvm_vm__gpa(vcpu->vm, pa, 32);

		if (st)
			kemari_warn(
				"post-mortem: stack at RSP %016llx %016llx %016llx %016llx",
				(unsigned long long)st[0],
				(unsigned long long)st[1],
				(unsigned long long)st[2],
				(unsigned long long)st[3]);
	}
}

static int kvm_cpu__exit_error(struct kvm_vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	struct kvm_regs regs;
	unsigned long long rip = 0;

	if (ioctl(vcpu->fd, KVM_GET_REGS, &regs) == 0)
		rip = regs.rip;
	switch (run->exit_reason) {
	case KVM_EXIT_INTERNAL_ERROR:
		return kemari_err(
			-EFAULT,
			"guest stopped: KVM internal error %u at RIP 0x%llx (emulation failure: build guests with -mgeneral-regs-only, no SSE/x87)",
			run->internal.suberror, rip);
	case KVM_EXIT_SHUTDOWN:
		/*
		 * No RIP: KVM has already reset the vCPU (kvm_amd reports
		 * 0xfff0). Where it died only the guest's own #DF handler can
		 * say, on the console above; what the VMM can still check is
		 * whether the structures exception delivery needs are intact.
		 */
		kvm_cpu__postmortem(vcpu);
		return kemari_err(
			-EFAULT,
			"guest stopped: triple fault on vCPU %u (a fault that could not be delivered; the guest's own report, if any, is above)",
			vcpu->id);
	case KVM_EXIT_FAIL_ENTRY:
		return kemari_err(
			-EFAULT,
			"guest stopped: VM entry failed (reason 0x%llx)",
			(unsigned long long)
				run->fail_entry.hardware_entry_failure_reason);
	case KVM_EXIT_MMIO:
		return kemari_err(
			-EFAULT,
			"guest stopped: access to 0x%llx outside RAM at RIP 0x%llx",
			(unsigned long long)run->mmio.phys_addr, rip);
	default:
		return kemari_err(
			-EFAULT,
			"guest stopped: unexpected KVM exit %u at RIP 0x%llx",
			run->exit_reason, rip);
	}
}

void kvm_cpu__note_end(struct kvm_vm *vm, const char *how, int status)
{
	struct kvm_vcpu *vcpu =
		cur_vcpu && cur_vcpu->vm == vm ? cur_vcpu : NULL;
	struct kvm_regs regs;
	char where[64] = "";

	/* At a port exit KVM has not yet stepped past the OUT: RIP is the
	 * instruction that ended the guest. */
	if (vcpu && !ioctl(vcpu->fd, KVM_GET_REGS, &regs))
		snprintf(where, sizeof(where), " at RIP 0x%llx%s",
			 (unsigned long long)regs.rip,
			 vm->ncpus > 1 ? " on vCPU " : "");
	if (vcpu && where[0] && vm->ncpus > 1)
		snprintf(where + strlen(where), sizeof(where) - strlen(where),
			 "%u", vcpu->id);
	if (how)
		kemari_info(
			"the guest %s%s: its own end, as a poweroff (status %d)",
			how, where, status);
	else
		kemari_info("the guest powered off (status %d)%s", status,
			    where);
}

/* A PC's port I/O: every access through the platform's port bus. */
static int kvm_cpu__pc_io(struct kvm_vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	int err = 0;

	kvm_cpu__lock(vcpu);
	/* String I/O (rep outsb/insb) comes as count accesses in a row. */
	for (uint32_t i = 0; i < run->io.count && !err; i++)
		err = kvm_pc__io(vcpu->vm, run->io.port,
				 run->io.direction == KVM_EXIT_IO_IN,
				 data + (size_t)i * run->io.size, run->io.size);
	pthread_mutex_unlock(&vcpu->vm->lock);
	return err;
}

static int kvm_cpu__io(struct kvm_vcpu *vcpu)
{
	struct kvm_vm *vm = vcpu->vm;
	struct kvm_run *run = vcpu->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	uint32_t val = 0;
	int err;

	if (vm->pc)
		return kvm_cpu__pc_io(vcpu);
	if (run->io.direction == KVM_EXIT_IO_IN) {
		/* No device has readable ports: reads float high. */
		memset(data, 0xff, (size_t)run->io.size * run->io.count);
		return 0;
	}
	memcpy(&val, data, KEMARI_MIN(run->io.size, (uint8_t)4));
	if (run->io.port == KEMARI_PORT_SHUTDOWN) {
		kvm_cpu__note_end(vm, NULL, (int)(val & 0x7fffffff));
		atomic_store(&vm->exit_status, (int)(val & 0x7fffffff));
		atomic_store(&vm->stop, true);
		return 0;
	}
	kvm_cpu__lock(vcpu);
	err = kvm_dev__kick(vm, run->io.port, val);
	pthread_mutex_unlock(&vm->lock);
	return err;
}

static int kvm_cpu__idle(struct kvm_vcpu *vcpu)
{
	struct kvm_vm *vm = vcpu->vm;
	int timeout = 100, err;

	/* Devices are polled by vCPU 0; parked vCPUs just wait. */
	if (vcpu->id != 0) {
		usleep(20000);
		return 0;
	}
	if (vm->cfg.hooks.tick) {
		uint64_t now = kemari_now_ns();

		timeout =
			now >= vm->next_tick_ns
				? 0
				: (int)((vm->next_tick_ns - now) / 1000000) + 1;
	}
	/* Input lands while the vCPU is out of KVM_RUN: no race with it. */
	kvm_cpu__lock(vcpu);
	err = kvm_dev__idle(vm, timeout);
	pthread_mutex_unlock(&vm->lock);
	return err;
}

static int kvm_cpu__loop(struct kvm_vcpu *vcpu)
{
	struct kvm_vm *vm = vcpu->vm;
	struct kvm_run *run = vcpu->run;
	int err = 0;

	cur_vcpu = vcpu;
	cur_run = run;
	while (!atomic_load(&vm->stop)) {
		if (atomic_load(&vm->pause_req)) {
			kvm_cpu__park(vcpu, true);
			continue;
		}
		err = kvm_cpu__tick(vcpu);
		if (err)
			break;
		if (ioctl(vcpu->fd, KVM_RUN, 0) < 0) {
			run->immediate_exit = 0;
			if (errno == EINTR || errno == EAGAIN)
				continue;
			err = kemari_err(-errno, "KVM_RUN: %s",
					 strerror(errno));
			break;
		}
		run->immediate_exit = 0;
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			err = kvm_cpu__io(vcpu);
			break;
		case KVM_EXIT_HLT:
			err = kvm_cpu__idle(vcpu);
			break;
		case KVM_EXIT_INTR:
			break;
		case KVM_EXIT_DIRTY_RING_FULL:
			err = kvm_vm__ring_full(vm);
			break;
		case KVM_EXIT_MMIO:
			/* A PC has holes a kernel probes (HPET, ...): nothing
			 * answers there, as on hardware. */
			if (!vm->pc) {
				err = kvm_cpu__exit_error(vcpu);
				break;
			}
			if (!run->mmio.is_write)
				memset(run->mmio.data, 0xff,
				       sizeof(run->mmio.data));
			break;
		default:
			err = kvm_cpu__exit_error(vcpu);
			break;
		}
		if (err)
			break;
	}
	cur_run = NULL;
	cur_vcpu = NULL;
	if (err) {
		atomic_store(&vm->exit_status, err);
		atomic_store(&vm->stop, true);
		kvm_cpu__resume(vm);
	}
	return err;
}

static void *kvm_cpu__thread(void *arg)
{
	struct kvm_vcpu *vcpu = arg;

	kvm_cpu__setup_signals();
	kvm_cpu__loop(vcpu);
	return NULL;
}

static void kvm_cpu__stop_others(struct kvm_vm *vm)
{
	for (unsigned int i = 1; i < vm->ncpus; i++)
		if (vm->vcpus[i].thread_started)
			pthread_kill(vm->vcpus[i].thread, KVM_SIG_KICK);
	kvm_cpu__resume(vm);
}

int kvm_cpu__run_all(struct kvm_vm *vm)
{
	struct sigevent sev;
	struct itimerspec its;
	timer_t timer;
	bool timer_ok = false;
	int err;

	err = kvm_cpu__setup_signals();
	if (err)
		return kemari_err(err, "cannot install the vCPU kick signal");
	atomic_store(&vm->stop, false);
	atomic_store(&vm->exit_status, 0);
	vm->vcpus[0].thread = pthread_self();
	vm->vcpus[0].thread_started = true;
	for (unsigned int i = 1; i < vm->ncpus; i++) {
		err = -pthread_create(&vm->vcpus[i].thread, NULL,
				      kvm_cpu__thread, &vm->vcpus[i]);
		if (err) {
			atomic_store(&vm->stop, true);
			break;
		}
		vm->vcpus[i].thread_started = true;
	}
	/*
	 * A periodic kick makes KVM_RUN return even when the guest never
	 * exits by itself, so ticks (heartbeats) keep their period.
	 */
	if (!err && vm->cfg.hooks.tick && vm->cfg.hooks.tick_ms) {
		memset(&sev, 0, sizeof(sev));
		sev.sigev_notify = SIGEV_THREAD_ID;
		sev.sigev_signo = KVM_SIG_KICK;
		sev._sigev_un._tid = gettid();
		if (timer_create(CLOCK_MONOTONIC, &sev, &timer) == 0) {
			its.it_interval.tv_sec = vm->cfg.hooks.tick_ms / 1000;
			its.it_interval.tv_nsec =
				(long)(vm->cfg.hooks.tick_ms % 1000) * 1000000L;
			its.it_value = its.it_interval;
			timer_settime(timer, 0, &its, NULL);
			timer_ok = true;
		}
	}
	if (!err && vm->pc)
		err = kvm_pc__start_io(vm);
	if (!err)
		err = kvm_cpu__loop(&vm->vcpus[0]);
	kvm_pc__stop_io(vm);
	if (timer_ok)
		timer_delete(timer);
	atomic_store(&vm->stop, true);
	kvm_cpu__stop_others(vm);
	for (unsigned int i = 1; i < vm->ncpus; i++) {
		if (vm->vcpus[i].thread_started)
			pthread_join(vm->vcpus[i].thread, NULL);
		vm->vcpus[i].thread_started = false;
	}
	vm->vcpus[0].thread_started = false;
	if (err)
		return err;
	return atomic_load(&vm->exit_status);
}

void kvm_cpu__kick_all(struct kvm_vm *vm)
{
	for (unsigned int i = 0; i < vm->ncpus; i++)
		if (vm->vcpus[i].thread_started)
			pthread_kill(vm->vcpus[i].thread, KVM_SIG_KICK);
}

/*
 * An empty IDT and a non-canonical RIP: the fetch raises #GP, which cannot
 * be delivered, nor can the #DF that follows: a real triple fault, the way
 * a machine check or a hypervisor bug ends a guest, not anything the guest
 * runs. Called on a paused vCPU whose last exit is complete.
 */
int kvm_cpu__crash(struct kvm_vcpu *vcpu)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0 ||
	    ioctl(vcpu->fd, KVM_GET_REGS, &regs) < 0)
		return kemari_err(-errno, "crash injection: %s",
				  strerror(errno));
	sregs.idt.limit = 0;
	regs.rip = 0x8000000000000000ULL;
	if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0 ||
	    ioctl(vcpu->fd, KVM_SET_REGS, &regs) < 0)
		return kemari_err(-errno, "crash injection: %s",
				  strerror(errno));
	return 0;
}

/* --- state save / restore ------------------------------------------------ */

enum {
	CPU_TAG_REGS = 1,
	CPU_TAG_SREGS,
	CPU_TAG_XSAVE,
	CPU_TAG_FPU,
	CPU_TAG_XCRS,
	CPU_TAG_MSRS,
	CPU_TAG_EVENTS,
	CPU_TAG_DEBUGREGS,
};

#define CPU_TAG(id, kind) (((uint32_t)(id) << 16) | (kind))

static const uint32_t kvm_cpu_msrs[] = {
	0xc0000080, /* EFER */
	0xc0000081, /* STAR */
	0xc0000082, /* LSTAR */
	0xc0000083, /* CSTAR */
	0xc0000084, /* SFMASK */
	0xc0000102, /* KERNEL_GS_BASE */
	0x00000010, /* TSC */
	0x00000174, /* SYSENTER_CS */
	0x00000175, /* SYSENTER_ESP */
	0x00000176, /* SYSENTER_EIP */
	0x00000277, /* PAT */
};

struct kvm_msrs_buf {
	struct kvm_msrs hdr;
	struct kvm_msr_entry e[KEMARI_ARRAY_SIZE(kvm_cpu_msrs)];
};

static int kvm_cpu__save_one(struct kvm_vcpu *vcpu, struct kemari_buf *out)
{
	int fd = vcpu->fd, err;
	unsigned int id = vcpu->id;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_vcpu_events ev;
	struct kvm_debugregs dbg;
	struct kvm_msrs_buf msrs;
	int nmsr;

	if (ioctl(fd, KVM_GET_REGS, &regs) < 0 ||
	    ioctl(fd, KVM_GET_SREGS, &sregs) < 0)
		return kemari_err(-errno, "saving vCPU %u registers: %s", id,
				  strerror(errno));
	vcpu->last_regs = regs;
	vcpu->last_sregs = sregs;
	vcpu->have_last = true;
	err = kemari_tlv__put(out, CPU_TAG(id, CPU_TAG_REGS), &regs,
			      sizeof(regs));
	err = err
		      ?: kemari_tlv__put(out, CPU_TAG(id, CPU_TAG_SREGS),
					 &sregs, sizeof(sregs));
	if (err)
		return err;
	if (ioctl(vcpu->vm->sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0) {
		struct kvm_xsave xs;

		if (ioctl(fd, KVM_GET_XSAVE, &xs) < 0)
			return kemari_err(-errno, "KVM_GET_XSAVE: %s",
					  strerror(errno));
		err = kemari_tlv__put(out, CPU_TAG(id, CPU_TAG_XSAVE), &xs,
				      sizeof(xs));
	} else {
		struct kvm_fpu fpu;

		if (ioctl(fd, KVM_GET_FPU, &fpu) < 0)
			return kemari_err(-errno, "KVM_GET_FPU: %s",
					  strerror(errno));
		err = kemari_tlv__put(out, CPU_TAG(id, CPU_TAG_FPU), &fpu,
				      sizeof(fpu));
	}
	if (err)
		return err;
	if (ioctl(vcpu->vm->sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0) {
		struct kvm_xcrs xcrs;

		if (ioctl(fd, KVM_GET_XCRS, &xcrs) == 0) {
			err = kemari_tlv__put(out, CPU_TAG(id, CPU_TAG_XCRS),
					      &xcrs, sizeof(xcrs));
			if (err)
				return err;
		}
	}
	memset(&msrs, 0, sizeof(msrs));
	msrs.hdr.nmsrs = KEMARI_ARRAY_SIZE(kvm_cpu_msrs);
	for (unsigned int i = 0; i < msrs.hdr.nmsrs; i++)
		msrs.e[i].index = kvm_cpu_msrs[i];
	nmsr = ioctl(fd, KVM_GET_MSRS, &msrs);
	if (nmsr < 0)
		return kemari_err(-errno, "KVM_GET_MSRS: %s", strerror(errno));
	msrs.hdr.nmsrs = (uint32_t)nmsr; /* KVM stops at the first it lacks */
	err = kemari_tlv__put(out, CPU_TAG(id, CPU_TAG_MSRS), &msrs,
			      sizeof(msrs.hdr) + nmsr * sizeof(msrs.e[0]));
	if (err)
		return err;
	if (ioctl(fd, KVM_GET_VCPU_EVENTS, &ev) == 0) {
		err = kemari_tlv__put(out, CPU_TAG(id, CPU_TAG_EVENTS), &ev,
				      sizeof(ev));
		if (err)
			return err;
	}
	if (ioctl(fd, KVM_GET_DEBUGREGS, &dbg) == 0)
		err = kemari_tlv__put(out, CPU_TAG(id, CPU_TAG_DEBUGREGS), &dbg,
				      sizeof(dbg));
	return err;
}

int kvm_cpu__save(struct kvm_vm *vm, struct kemari_buf *out)
{
	/* A Linux guest's state is far larger (state.c); a freestanding
	 * guest keeps the few registers it uses. */
	if (vm->pc)
		return kvm_state__save(vm, out);
	for (unsigned int i = 0; i < vm->ncpus; i++) {
		int err = kvm_cpu__save_one(&vm->vcpus[i], out);

		if (err)
			return err;
	}
	return 0;
}

static int kvm_cpu__set(struct kvm_vcpu *vcpu, unsigned long req,
			const void *val, uint32_t len, size_t want,
			const char *what)
{
	void *tmp;
	int ret;

	if (len < want)
		return kemari_err(
			-EBADMSG,
			"vCPU state blob: %s is %u bytes, expected %zu", what,
			len, want);
	/* ioctl wants a writable, aligned copy; the blob may be neither. */
	tmp = malloc(want);
	if (!tmp)
		return -ENOMEM;
	memcpy(tmp, val, want);
	ret = ioctl(vcpu->fd, req, tmp);
	free(tmp);
	if (ret < 0)
		return kemari_err(-errno, "restoring vCPU %u %s: %s", vcpu->id,
				  what, strerror(errno));
	return 0;
}

int kvm_cpu__load(struct kvm_vm *vm, const void *blob, size_t len)
{
	/* Order matters: SREGS (modes) before REGS, MSRs after both. */
	static const uint32_t order[] = {
		CPU_TAG_SREGS, CPU_TAG_REGS, CPU_TAG_XCRS,   CPU_TAG_XSAVE,
		CPU_TAG_FPU,   CPU_TAG_MSRS, CPU_TAG_EVENTS, CPU_TAG_DEBUGREGS,
	};
	unsigned int seen_regs = 0;

	if (vm->pc)
		return kvm_state__load(vm, blob, len);
	for (unsigned int o = 0; o < KEMARI_ARRAY_SIZE(order); o++) {
		struct kemari_tlv_iter it = { blob, len };
		const void *val;
		uint32_t tag, n;
		int r, err = 0;

		while ((r = kemari_tlv__next(&it, &tag, &val, &n)) > 0) {
			unsigned int id = tag >> 16, kind = tag & 0xffff;
			struct kvm_vcpu *v;

			if (kind != order[o])
				continue;
			if (id >= vm->ncpus)
				return kemari_err(
					-EBADMSG,
					"vCPU state blob names vCPU %u but this VM has %u",
					id, vm->ncpus);
			v = &vm->vcpus[id];
			switch (kind) {
			case CPU_TAG_SREGS:
				err = kvm_cpu__set(v, KVM_SET_SREGS, val, n,
						   sizeof(struct kvm_sregs),
						   "special registers");
				if (!err)
					memcpy(&v->last_sregs, val,
					       sizeof(v->last_sregs));
				break;
			case CPU_TAG_REGS:
				err = kvm_cpu__set(v, KVM_SET_REGS, val, n,
						   sizeof(struct kvm_regs),
						   "registers");
				if (!err) {
					memcpy(&v->last_regs, val,
					       sizeof(v->last_regs));
					v->have_last = true;
				}
				seen_regs++;
				break;
			case CPU_TAG_XCRS:
				err = kvm_cpu__set(v, KVM_SET_XCRS, val, n,
						   sizeof(struct kvm_xcrs),
						   "XCRs");
				break;
			case CPU_TAG_XSAVE:
				err = kvm_cpu__set(v, KVM_SET_XSAVE, val, n,
						   sizeof(struct kvm_xsave),
						   "XSAVE area");
				break;
			case CPU_TAG_FPU:
				err = kvm_cpu__set(v, KVM_SET_FPU, val, n,
						   sizeof(struct kvm_fpu),
						   "FPU");
				break;
			case CPU_TAG_MSRS: {
				struct kvm_msrs m;

				if (n < sizeof(m))
					return kemari_err(
						-EBADMSG,
						"vCPU state blob: bad MSR list");
				memcpy(&m, val, sizeof(m));
				if (m.nmsrs > KEMARI_ARRAY_SIZE(kvm_cpu_msrs) ||
				    n < sizeof(m) + m.nmsrs *
							    sizeof(struct kvm_msr_entry))
					return kemari_err(
						-EBADMSG,
						"vCPU state blob: bad MSR list");
				err = kvm_cpu__set(v, KVM_SET_MSRS, val, n, n,
						   "MSRs");
				break;
			}
			case CPU_TAG_EVENTS:
				err = kvm_cpu__set(
					v, KVM_SET_VCPU_EVENTS, val, n,
					sizeof(struct kvm_vcpu_events),
					"pending events");
				break;
			case CPU_TAG_DEBUGREGS:
				err = kvm_cpu__set(v, KVM_SET_DEBUGREGS, val, n,
						   sizeof(struct kvm_debugregs),
						   "debug registers");
				break;
			}
			if (err)
				return err;
		}
		if (r < 0)
			return kemari_err(r, "vCPU state blob is malformed");
	}
	if (seen_regs != vm->ncpus)
		return kemari_err(
			-EBADMSG,
			"vCPU state blob has registers for %u of %u vCPUs",
			seen_regs, vm->ncpus);
	vm->loaded = true;
	return 0;
}
