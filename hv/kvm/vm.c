// SPDX-License-Identifier: MIT
/*
 * KVM VM and guest RAM. RAM is one anonymous shared mapping registered as a
 * single memory slot with dirty logging, so it can also be registered as an
 * RDMA memory region as is and sent from directly.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "boot/linux_boot.h"
#include "kemari/kemari.h"
#include "kemari/testcfg.h"
#include "kvm.h"

#define KVM_MIN_API 12

static int kvm_vm__open_dev(struct kvm_vm *vm)
{
	/* KEMARI_KVM_DEV: another device node, for tests of these errors. */
	const char *dev = kemari_testcfg__get()->kvm_dev;
	int api;

	if (!dev)
		dev = "/dev/kvm";
	vm->sys_fd = open(dev, O_RDWR | O_CLOEXEC);
	if (vm->sys_fd < 0) {
		int err = -errno;

		if (err == -ENOENT || err == -ENODEV || err == -ENXIO)
			return kemari_err(
				err,
				"%s is missing: load the kvm module (kvm_intel/kvm_amd) or run on a host with virtualization enabled",
				dev);
		if (err == -EACCES || err == -EPERM)
			return kemari_err(
				err,
				"%s: permission denied: run as root or add yourself to the 'kvm' group",
				dev);
		return kemari_err(err, "%s: %s", dev, strerror(-err));
	}
	api = ioctl(vm->sys_fd, KVM_GET_API_VERSION, 0);
	if (api < 0)
		return kemari_err(
			-ENOTTY,
			"%s is not a KVM device (KVM_GET_API_VERSION failed): point at /dev/kvm",
			dev);
	if (api < KVM_MIN_API)
		return kemari_err(
			-ENOTSUP,
			"KVM API version %d is too old (need %d): use a newer kernel",
			api, KVM_MIN_API);
	vm->vcpu_mmap_size = ioctl(vm->sys_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (vm->vcpu_mmap_size <= 0)
		return kemari_err(-ENOTSUP, "KVM_GET_VCPU_MMAP_SIZE failed");
	return 0;
}

static int kvm_vm__enable_ring(struct kvm_vm *vm);

static int kvm_vm__map_ram(struct kvm_vm *vm)
{
	struct kvm_userspace_memory_region region;
	int flags = MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE;
	void *p;

	/*
	 * MAP_SHARED keeps the pages pinned-registrable (ibv_reg_mr) and lets
	 * a forked helper see them; huge pages are opportunistic.
	 */
	p = mmap(NULL, vm->ram_size, PROT_READ | PROT_WRITE, flags, -1, 0);
	if (p == MAP_FAILED)
		return kemari_err(-errno,
				  "cannot map %llu MiB of guest RAM: %s",
				  (unsigned long long)(vm->ram_size >> 20),
				  strerror(errno));
	madvise(p, vm->ram_size, MADV_HUGEPAGE);
	vm->ram = p;
	/*
	 * Guest RAM is populated and locked: a paused guest must not wait
	 * for the host to page its memory back in (that would be pause
	 * time), RDMA pins it anyway, and the kernel then has no reason to
	 * reclaim or unmap its pages under a running guest. (It was tried
	 * against the guest crashes inside the emulated test VM and did not
	 * stop them: docs/testing.md.) Without the privilege
	 * (RLIMIT_MEMLOCK) it runs unlocked, and says so.
	 */
	if (mlock(p, vm->ram_size) < 0)
		kemari_warn(
			"guest RAM (%llu MiB) not locked in memory: %s (raise the locked-memory limit, e.g. ulimit -l unlimited, to keep it resident)",
			(unsigned long long)(vm->ram_size >> 20),
			strerror(errno));

	/*
	 * Freestanding guests see RAM flat from 0. A PC keeps the 32-bit PCI
	 * hole (3-4 GiB) free: RAM above 3 GiB moves to 4 GiB, as a second
	 * slot over the same host mapping (the engine's page numbers stay
	 * offsets into that mapping).
	 */
	if (vm->pc) {
		struct kvm_e820_slot s[2];
		int n = kvm_e820__slots(vm->ram_size, s, 2);

		if (n < 0)
			return n;
		for (int i = 0; i < n; i++)
			vm->slots[i] =
				(struct kvm_slot){ .gpa = s[i].gpa,
						   .size = s[i].size,
						   .off = s[i].host_off };
		vm->nslots = (unsigned int)n;
	} else {
		vm->slots[0] = (struct kvm_slot){ .size = vm->ram_size };
		vm->nslots = 1;
	}
	for (unsigned int i = 0; i < vm->nslots; i++) {
		memset(&region, 0, sizeof(region));
		region.slot = i;
		region.flags = KVM_MEM_LOG_DIRTY_PAGES;
		region.guest_phys_addr = vm->slots[i].gpa;
		region.memory_size = vm->slots[i].size;
		region.userspace_addr = (uintptr_t)p + vm->slots[i].off;
		if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
			return kemari_err(-errno,
					  "KVM_SET_USER_MEMORY_REGION: %s",
					  strerror(errno));
	}
	return 0;
}

/*
 * KVM's default routing sends GSI 0 to IOAPIC pin 0; on a PC (and in the
 * MP table) the PIT's IRQ 0 arrives on pin 2, as QEMU routes it. GSIs
 * 0-15 also reach the PICs, 16-23 only the IOAPIC.
 */
static int kvm_vm__irq_routing(struct kvm_vm *vm)
{
	struct {
		struct kvm_irq_routing hdr;
		struct kvm_irq_routing_entry e[40];
	} r;
	unsigned int n = 0;

	memset(&r, 0, sizeof(r));
	for (unsigned int gsi = 0; gsi < KVM_MP_IOAPIC_PINS; gsi++) {
		if (gsi < 16) {
			r.e[n].gsi = gsi;
			r.e[n].type = KVM_IRQ_ROUTING_IRQCHIP;
			r.e[n].u.irqchip.irqchip =
				gsi < 8 ? KVM_IRQCHIP_PIC_MASTER
					: KVM_IRQCHIP_PIC_SLAVE;
			r.e[n++].u.irqchip.pin = gsi % 8;
		}
		if (gsi == 2)
			continue; /* the cascade: no IOAPIC pin of its own */
		r.e[n].gsi = gsi;
		r.e[n].type = KVM_IRQ_ROUTING_IRQCHIP;
		r.e[n].u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
		r.e[n++].u.irqchip.pin = gsi ? gsi : 2;
	}
	r.hdr.nr = n;
	if (ioctl(vm->vm_fd, KVM_SET_GSI_ROUTING, &r) < 0)
		return kemari_err(-errno, "KVM_SET_GSI_ROUTING: %s",
				  strerror(errno));
	return 0;
}

/*
 * The PC platform's in-kernel parts, before any vCPU exists: the TSS and
 * identity-map pages KVM needs below 4 GiB (inside the PCI hole, never
 * RAM), the PICs, IOAPIC and local APICs, and the PIT.
 */
static int kvm_vm__pc_platform(struct kvm_vm *vm)
{
	struct kvm_pit_config pit = { .flags = 0 };
	uint64_t idmap = KVM_PC_IDENTITY_MAP_GPA;

	if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, KVM_PC_TSS_GPA) < 0)
		return kemari_err(-errno, "KVM_SET_TSS_ADDR: %s",
				  strerror(errno));
	if (ioctl(vm->sys_fd, KVM_CHECK_EXTENSION,
		  KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0 &&
	    ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
		return kemari_err(-errno, "KVM_SET_IDENTITY_MAP_ADDR: %s",
				  strerror(errno));
	if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return kemari_err(-errno, "KVM_CREATE_IRQCHIP: %s",
				  strerror(errno));
	if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		return kemari_err(-errno, "KVM_CREATE_PIT2: %s",
				  strerror(errno));
	return kvm_vm__irq_routing(vm);
}

/* --- the in-kernel platform's state (PC) ------------------------------- */

static uint64_t kvm_vm__realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

int kvm_vm__get_clock(struct kvm_vm *vm, struct kvm_vm_clock *c)
{
	uint64_t before = kvm_vm__realtime_ns(), after;

	memset(c, 0, sizeof(*c));
	if (ioctl(vm->vm_fd, KVM_GET_CLOCK, &c->kvm) < 0)
		return kemari_err(-errno, "KVM_GET_CLOCK: %s", strerror(errno));
	after = kvm_vm__realtime_ns();
	/*
	 * KVM reads the host's real time with the clock, atomically, only
	 * where the host clocksource is the TSC; elsewhere ours, the middle
	 * of the call, is as good as the call is short: microseconds, but a
	 * millisecond now and then on a loaded host (the emulated test VM).
	 */
	c->realtime_ns = c->kvm.flags & KVM_CLOCK_REALTIME
				 ? c->kvm.realtime
				 : before + (after - before) / 2;
	return 0;
}

int kvm_vm__get_state(struct kvm_vm *vm, struct kvm_vm_state *s)
{
	static const char *const what[] = { "PIC master", "PIC slave",
					    "IOAPIC" };

	for (unsigned int i = 0; i < KEMARI_ARRAY_SIZE(s->chip); i++) {
		memset(&s->chip[i], 0, sizeof(s->chip[i]));
		s->chip[i].chip_id = i; /* KVM_IRQCHIP_PIC_MASTER... */
		if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &s->chip[i]) < 0)
			return kemari_err(-errno, "KVM_GET_IRQCHIP (%s): %s",
					  what[i], strerror(errno));
	}
	if (ioctl(vm->vm_fd, KVM_GET_PIT2, &s->pit) < 0)
		return kemari_err(-errno, "KVM_GET_PIT2: %s", strerror(errno));
	return 0;
}

/*
 * kvmclock continues from the saved value plus the real time since it was
 * read (a takeover's gap), as a running guest's would have. KVM_CLOCK_REALTIME lets KVM add the gap itself at the
 * moment it sets the clock (host >= 5.16); older KVMs refuse the flag, and
 * the gap is then added here. KVM_CLOCK_TSC_STABLE is never passed back:
 * it describes the source host, and KVMs before 5.16 refuse any flag.
 */
static int kvm_vm__set_clock(struct kvm_vm *vm, const struct kvm_vm_clock *c)
{
	struct kvm_clock_data d;
	uint64_t now;

	memset(&d, 0, sizeof(d));
	d.clock = c->kvm.clock;
	d.realtime = c->realtime_ns;
	d.flags = KVM_CLOCK_REALTIME;
	if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &d) == 0)
		return 0;
	if (errno != EINVAL)
		return kemari_err(-errno, "KVM_SET_CLOCK: %s", strerror(errno));
	memset(&d, 0, sizeof(d));
	now = kvm_vm__realtime_ns();
	d.clock = c->kvm.clock +
		  (now > c->realtime_ns ? now - c->realtime_ns : 0);
	if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &d) < 0)
		return kemari_err(-errno, "KVM_SET_CLOCK: %s", strerror(errno));
	return 0;
}

/*
 * The order, all before the first vCPU's state (as Firecracker restores):
 * - the clock first: the vCPUs' TSCs are then set to follow it
 *   (state.c), and the kvmclock MSRs restored with them make KVM write
 *   the guest's wall-clock and per-vCPU time pages against it. Not for a
 *   VM's own state (clock false): its kvmclock ran on through the pause,
 *   as it does every epoch, and no value read back can be more exact
 *   (where KVM gives no real time with it, ours missed it by about a
 *   millisecond per epoch in the emulated test VM, enough for the guest
 *   to throw out its TSC clocksource);
 * - the PICs and the IOAPIC next: KVM_SET_IRQCHIP re-delivers the
 *   IOAPIC pins still pending; SET_LAPIC, which comes after, then leaves
 *   every vCPU with exactly the saved IRR/ISR. The device models restored
 *   later (load_dev) drive none of these pins (pc.c): the pins hold
 *   their saved levels and edges here;
 * - the PIT last: SET_PIT2 restarts its counters, and a counter expiring
 *   injects through the PIC and IOAPIC, which must be in place.
 */
int kvm_vm__set_state(struct kvm_vm *vm, const struct kvm_vm_state *s,
		      bool clock)
{
	static const char *const what[] = { "PIC master", "PIC slave",
					    "IOAPIC" };
	struct kvm_irqchip chip;
	struct kvm_pit_state2 pit;
	int err = clock ? kvm_vm__set_clock(vm, &s->clock) : 0;

	if (err)
		return err;
	for (unsigned int i = 0; i < KEMARI_ARRAY_SIZE(s->chip); i++) {
		chip = s->chip[i];
		if (chip.chip_id != i)
			return kemari_err(-EBADMSG,
					  "VM state: irqchip %u is chip %u", i,
					  chip.chip_id);
		if (ioctl(vm->vm_fd, KVM_SET_IRQCHIP, &chip) < 0)
			return kemari_err(-errno, "KVM_SET_IRQCHIP (%s): %s",
					  what[i], strerror(errno));
	}
	pit = s->pit;
	if (ioctl(vm->vm_fd, KVM_SET_PIT2, &pit) < 0)
		return kemari_err(-errno, "KVM_SET_PIT2: %s", strerror(errno));
	return 0;
}

int kvm_vm__verify_restore(struct kvm_vm *vm)
{
	struct kemari_buf *c = &vm->verify_cpu, *d = &vm->verify_dev;
	int err;

	kemari_buf__reset(c);
	kemari_buf__reset(d);
	err = kvm_cpu__save(vm, c);
	if (!err)
		err = vm->pc ? kvm_pc__save(vm, d) : kvm_dev__save(vm, d);
	err = err ?: kvm_cpu__load(vm, c->data, c->len);
	if (!err)
		err = vm->pc ? kvm_pc__load(vm, d->data, d->len)
			     : kvm_dev__load(vm, d->data, d->len);
	/* Takeover then kicks the queues; here the events the engine holds
	 * are still to be released, and the rings just re-read. */
	if (!err && vm->pc)
		err = kvm_pc__reattach(vm, false);
	return err;
}

int kvm_vm__irq_line(struct kvm_vm *vm, unsigned int gsi, int level)
{
	struct kvm_irq_level l = { .irq = gsi, .level = level ? 1 : 0 };

	if (ioctl(vm->vm_fd, KVM_IRQ_LINE, &l) < 0)
		return kemari_err(-errno, "KVM_IRQ_LINE %u: %s", gsi,
				  strerror(errno));
	return 0;
}

/*
 * KVM without vmx/svm under it (PVM) pages the guest by shadow page tables,
 * which overrun the dirty ring (below): the CPU's flags tell, as
 * tests/run-kvm.sh reads them; so does KVM told not to use EPT/NPT
 * (kvm_intel.ept=0, kvm_amd.npt=0: the emulated test VM). flags is the
 * "flags" line of /proc/cpuinfo, npt and ept the module parameters' first
 * character ('Y', 'N', '1', '0'), or 0 where there is none.
 */
bool kvm_vm__shadow_paging_of(const char *flags, int npt, int ept)
{
	if (!flags)
		return false;
	if (!strstr(flags, " vmx") && !strstr(flags, " svm"))
		return true;
	return npt == 'N' || npt == '0' || ept == 'N' || ept == '0';
}

static int kvm_vm__param(const char *path)
{
	FILE *f = fopen(path, "r");
	int c;

	if (!f)
		return 0;
	c = fgetc(f);
	fclose(f);
	return c == EOF ? 0 : c;
}

static bool kvm_vm__shadow_paging(void)
{
	char line[4096];
	bool found = false;
	FILE *f = fopen("/proc/cpuinfo", "r");

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = !strncmp(line, "flags", 5);
	fclose(f);
	return kvm_vm__shadow_paging_of(
		found ? line : NULL,
		kvm_vm__param("/sys/module/kvm_amd/parameters/npt"),
		kvm_vm__param("/sys/module/kvm_intel/parameters/ept"));
}

int kvm_vm__create(struct kvm_vm **out, const struct kemari_hv_cfg *cfg)
{
	uint64_t npages = cfg->mem_size / KEMARI_PAGE_SIZE;
	struct kvm_vm *vm;
	int err;

	if (cfg->mem_size < KVM_MIN_RAM || cfg->mem_size > KVM_MAX_RAM ||
	    cfg->mem_size % (2ULL << 20))
		return kemari_err(
			-EINVAL,
			"--mem=%llu bytes: use a multiple of 2M between 2M and 16G",
			(unsigned long long)cfg->mem_size);
	if (cfg->ncpus < 1 || cfg->ncpus > KVM_MAX_VCPUS)
		return kemari_err(-EINVAL, "--cpus=%u: use 1 to %d", cfg->ncpus,
				  KVM_MAX_VCPUS);
	if (cfg->kernel) {
		err = kvm_linux__check(cfg);
		if (err)
			return err;
	}
	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return -ENOMEM;
	vm->cfg = *cfg;
	vm->sys_fd = vm->vm_fd = -1;
	vm->ram_size = cfg->mem_size;
	vm->ncpus = cfg->ncpus;
	vm->pc = cfg->kernel != NULL;
	pthread_mutex_init(&vm->lock, NULL);
	pthread_mutex_init(&vm->dirty_lock, NULL);
	pthread_mutex_init(&vm->pause_lock, NULL);
	pthread_cond_init(&vm->pause_cond, NULL);
	for (unsigned int i = 0; i < KVM_MAX_VCPUS; i++)
		vm->vcpus[i].fd = -1;

	err = kvm_vm__open_dev(vm);
	if (err)
		goto err_destroy;
	vm->vm_fd = ioctl(vm->sys_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0) {
		err = kemari_err(-errno, "KVM_CREATE_VM: %s", strerror(errno));
		goto err_destroy;
	}
	vm->pend_bitmap = calloc((npages + 63) / 64, sizeof(uint64_t));
	vm->pend_list = malloc(npages * sizeof(uint64_t));
	vm->kvm_bitmap = calloc((npages + 63) / 64, sizeof(uint64_t));
	if (!vm->pend_bitmap || !vm->pend_list || !vm->kvm_bitmap) {
		err = -ENOMEM;
		goto err_destroy;
	}
	err = kvm_vm__map_ram(vm);
	if (!err && vm->pc)
		err = kvm_vm__pc_platform(vm);
	if (err)
		goto err_destroy;
	/* The ring must be enabled before any vCPU exists. */
	if (cfg->dirty_track == KEMARI_DIRTY_AUTO && kvm_vm__shadow_paging()) {
		static bool told;

		if (!told)
			kemari_info(
				"kvm: dirty pages tracked by bitmap: this host's KVM pages guests by shadow page tables (no vmx/svm, as under PVM, or EPT/NPT turned off), where KVM overruns its dirty ring under load");
		told = true;
	} else if (cfg->dirty_track != KEMARI_DIRTY_BITMAP) {
		err = kvm_vm__enable_ring(vm);
		if (err && cfg->dirty_track == KEMARI_DIRTY_RING) {
			err = kemari_err(
				err,
				"this KVM has no dirty ring (KVM_CAP_DIRTY_LOG_RING): use --dirty-track=bitmap");
			goto err_destroy;
		}
		err = 0;
	}
	for (unsigned int i = 0; i < vm->ncpus; i++) {
		err = kvm_cpu__create(vm, i);
		if (err)
			goto err_destroy;
	}
	if (vm->pc) {
		/* Before any vCPU runs: the CPUID read back is the one both
		 * sides set, with none of the bits the guest turns on later. */
		err = kvm_state__create(vm);
		err = err ?: kvm_pc__create(vm);
		if (err)
			goto err_destroy;
		*out = vm;
		return 0;
	}
	err = kvm_console__create(vm);
	if (!err && cfg->disk_path)
		err = kvm_blk__create(vm, cfg->disk_path, cfg->disk_size);
	if (!err && cfg->net)
		err = kvm_net__create(vm, cfg->net, cfg->defer_net);
	if (err)
		goto err_destroy;
	*out = vm;
	return 0;

err_destroy:
	kvm_vm__destroy(vm);
	return err;
}

void kvm_vm__destroy(struct kvm_vm *vm)
{
	if (!vm)
		return;
	kvm_pc__destroy(vm);
	kvm_state__destroy(vm);
	kemari_buf__fini(&vm->verify_cpu);
	kemari_buf__fini(&vm->verify_dev);
	kvm_dev__destroy_all(vm);
	for (unsigned int i = 0; i < KVM_MAX_VCPUS; i++)
		kvm_cpu__destroy(&vm->vcpus[i]);
	if (vm->ram)
		munmap(vm->ram, vm->ram_size);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->sys_fd >= 0)
		close(vm->sys_fd);
	free(vm->pend_bitmap);
	free(vm->pend_list);
	free(vm->kvm_bitmap);
	pthread_mutex_destroy(&vm->lock);
	pthread_mutex_destroy(&vm->dirty_lock);
	pthread_mutex_destroy(&vm->pause_lock);
	pthread_cond_destroy(&vm->pause_cond);
	free(vm);
}

void *kvm_vm__gpa(struct kvm_vm *vm, uint64_t gpa, uint64_t len)
{
	for (unsigned int i = 0; i < vm->nslots; i++) {
		const struct kvm_slot *s = &vm->slots[i];

		if (gpa >= s->gpa && gpa - s->gpa <= s->size &&
		    len <= s->size - (gpa - s->gpa))
			return vm->ram + s->off + (gpa - s->gpa);
	}
	return NULL;
}

/* Add one page to the pending set; dirty_lock held. */
static void kvm_vm__pend(struct kvm_vm *vm, uint64_t pfn)
{
	uint64_t bit = 1ULL << (pfn % 64);

	if (!(vm->pend_bitmap[pfn / 64] & bit)) {
		vm->pend_bitmap[pfn / 64] |= bit;
		vm->pend_list[vm->pend_count++] = pfn;
	}
}

void kvm_vm__mark_dirty(struct kvm_vm *vm, uint64_t gpa, uint64_t len)
{
	uint64_t first, last, off;
	const uint8_t *p = len ? kvm_vm__gpa(vm, gpa, 0) : NULL;

	if (!p)
		return;
	/* Page numbers are offsets into the RAM mapping, not addresses. */
	off = (uint64_t)(p - vm->ram);
	if (len > vm->ram_size - off)
		len = vm->ram_size - off;
	first = off >> KEMARI_PAGE_SHIFT;
	last = (off + len - 1) >> KEMARI_PAGE_SHIFT;
	pthread_mutex_lock(&vm->dirty_lock);
	for (uint64_t pfn = first; pfn <= last; pfn++)
		kvm_vm__pend(vm, pfn);
	pthread_mutex_unlock(&vm->dirty_lock);
}

/*
 * Dirty ring: each vCPU has a ring of (slot, offset) entries that KVM fills
 * as the guest writes; we harvest an entry by reading it (acquire) and
 * flagging it for reset (release), then KVM_RESET_DIRTY_RINGS re-protects
 * the harvested pages. Cost follows the number of dirty pages, not RAM.
 */
static int kvm_vm__enable_ring(struct kvm_vm *vm)
{
	struct kvm_enable_cap cap = { 0 };
	int max;

	max = ioctl(vm->sys_fd, KVM_CHECK_EXTENSION,
		    KVM_CAP_DIRTY_LOG_RING_ACQ_REL);
	cap.cap = KVM_CAP_DIRTY_LOG_RING_ACQ_REL;
	if (max <= 0) {
		max = ioctl(vm->sys_fd, KVM_CHECK_EXTENSION,
			    KVM_CAP_DIRTY_LOG_RING);
		cap.cap = KVM_CAP_DIRTY_LOG_RING;
	}
	if (max <= 0)
		return -ENOTSUP;
	/* Up to 64Ki entries (1 MiB) per vCPU: few ring-full exits. */
	vm->ring_bytes = 1u << 20;
	while (vm->ring_bytes > (uint32_t)max)
		vm->ring_bytes >>= 1;
	cap.args[0] = vm->ring_bytes;
	if (ioctl(vm->vm_fd, KVM_ENABLE_CAP, &cap) < 0)
		return -errno;
	vm->dirty_ring = true;
	return 0;
}

int kvm_vm__map_ring(struct kvm_vm *vm, struct kvm_vcpu *vcpu)
{
	void *p;

	if (!vm->dirty_ring)
		return 0;
	p = mmap(NULL, vm->ring_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
		 vcpu->fd, KVM_DIRTY_LOG_PAGE_OFFSET * getpagesize());
	if (p == MAP_FAILED)
		return kemari_err(-errno,
				  "mmap of the dirty ring of vCPU %u: %s",
				  vcpu->id, strerror(errno));
	vcpu->ring = p;
	vcpu->ring_entries = vm->ring_bytes / sizeof(struct kvm_dirty_gfn);
	vcpu->ring_fetch = 0;
	return 0;
}

void kvm_vm__unmap_ring(struct kvm_vm *vm, struct kvm_vcpu *vcpu)
{
	if (vcpu->ring)
		munmap(vcpu->ring, vm->ring_bytes);
	vcpu->ring = NULL;
}

/*
 * KVM stops a vCPU (KVM_EXIT_DIRTY_RING_FULL) 64 entries before its ring is
 * full, but with shadow paging (KVM through PVM, no vmx/svm) one fault can
 * log more than that at once, and KVM then logs past the end: the newest
 * entry overwrites the oldest unharvested one (that page is lost) and,
 * after the next reset, KVM counts entries as logged that read as empty,
 * so the harvest stops there for good and the vCPU exits for a full ring
 * forever (measured natively: a secondary that took over under load,
 * 64949 dirty entries behind 46 empty ones, its guest never answered
 * again). KVM's reset does not check its own bounds, so no resynchronising
 * from user space is safe. Hence: the bitmap by default where paging is
 * shadowed (kvm_vm__shadow_paging), and with the ring a harvest that finds
 * a ring entirely dirty makes the next collection take all RAM, and a vCPU
 * that keeps exiting for a full ring with nothing to harvest ends with an
 * error that says so instead of spinning.
 */
static void kvm_vm__ring_overrun(struct kvm_vm *vm, unsigned int cpu)
{
	vm->ring_lost = true;
	/* Unprotected, nothing is lost that anyone needs: stay quiet. */
	if (vm->dirty_logging && vm->ring_overflows++ == 0)
		kemari_warn(
			"kvm: KVM logged past the end of vCPU %u's dirty ring (entries may be lost): the next commit sends all RAM (--dirty-track=bitmap avoids the ring)",
			cpu);
}

/* Harvest every vCPU's ring into d (or into the pending set if d is NULL). */
static int kvm_vm__harvest(struct kvm_vm *vm, struct kemari_dirty *d,
			   uint64_t *count)
{
	uint64_t n = 0;

	for (unsigned int i = 0; i < vm->ncpus; i++) {
		struct kvm_vcpu *v = &vm->vcpus[i];
		uint64_t got = 0;

		for (;;) {
			struct kvm_dirty_gfn *e =
				&v->ring[v->ring_fetch & (v->ring_entries - 1)];
			uint32_t flags =
				__atomic_load_n(&e->flags, __ATOMIC_ACQUIRE);

			if (!(flags & KVM_DIRTY_GFN_F_DIRTY))
				break;
			uint16_t slot = (uint16_t)e->slot; /* address space 0 */

			if (slot < vm->nslots &&
			    e->offset <
				    vm->slots[slot].size / KEMARI_PAGE_SIZE) {
				uint64_t pfn =
					vm->slots[slot].off / KEMARI_PAGE_SIZE +
					e->offset;

				if (d)
					kemari_dirty__mark(d, pfn);
				else
					kvm_vm__pend(vm, pfn);
			}
			__atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET,
					 __ATOMIC_RELEASE);
			v->ring_fetch++;
			got++;
		}
		if (got >= v->ring_entries)
			kvm_vm__ring_overrun(vm, i);
		n += got;
	}
	if (count)
		*count = n;
	if (n && ioctl(vm->vm_fd, KVM_RESET_DIRTY_RINGS, 0) < 0)
		return kemari_err(-errno, "KVM_RESET_DIRTY_RINGS: %s",
				  strerror(errno));
	return 0;
}

int kvm_vm__ring_full(struct kvm_vm *vm)
{
	uint64_t n;
	int err;

	pthread_mutex_lock(&vm->dirty_lock);
	err = kvm_vm__harvest(vm, NULL, &n);
	/* A full ring with nothing in it: KVM overran it (above). */
	vm->ring_empty_exits = n ? 0 : vm->ring_empty_exits + 1;
	if (!err && vm->ring_empty_exits >= 1000)
		err = kemari_err(
			-EIO,
			"kvm: KVM keeps reporting a full dirty ring that holds nothing to harvest (it logged past the ring's end: seen with shadow paging, KVM through PVM): run with --dirty-track=bitmap");
	pthread_mutex_unlock(&vm->dirty_lock);
	return err;
}

/* KVM_GET_DIRTY_LOG (+ KVM_CLEAR_DIRTY_LOG): the bitmap way, O(RAM). */
static int kvm_vm__get_log(struct kvm_vm *vm)
{
	/* Slot offsets are multiples of 64 pages: one bitmap serves all. */
	for (unsigned int i = 0; i < vm->nslots; i++) {
		uint64_t *bm = vm->kvm_bitmap +
			       vm->slots[i].off / KEMARI_PAGE_SIZE / 64;
		struct kvm_dirty_log log = { .slot = i, .dirty_bitmap = bm };

		if (ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
			return kemari_err(-errno, "KVM_GET_DIRTY_LOG: %s",
					  strerror(errno));
		if (vm->manual_protect) {
			/* Re-protect exactly what we consumed, while paused. */
			struct kvm_clear_dirty_log clr = {
				.slot = i,
				.first_page = 0,
				.num_pages = (uint32_t)(vm->slots[i].size /
							KEMARI_PAGE_SIZE),
				.dirty_bitmap = bm,
			};

			if (ioctl(vm->vm_fd, KVM_CLEAR_DIRTY_LOG, &clr) < 0)
				return kemari_err(-errno,
						  "KVM_CLEAR_DIRTY_LOG: %s",
						  strerror(errno));
		}
	}
	return 0;
}

int kvm_vm__dirty_start(struct kvm_vm *vm)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 };
	int err;

	pthread_mutex_lock(&vm->dirty_lock);
	if (vm->dirty_ring) {
		/* Discard what was logged so far: the caller syncs all RAM. */
		err = kvm_vm__harvest(vm, NULL, NULL);
	} else {
		if (!vm->manual_protect &&
		    ioctl(vm->sys_fd, KVM_CHECK_EXTENSION,
			  KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) > 0) {
			cap.args[0] = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;
			if (ioctl(vm->vm_fd, KVM_ENABLE_CAP, &cap) == 0)
				vm->manual_protect = true;
		}
		err = kvm_vm__get_log(vm);
	}
	for (uint64_t i = 0; i < vm->pend_count; i++)
		vm->pend_bitmap[vm->pend_list[i] / 64] = 0;
	vm->pend_count = 0;
	vm->ring_lost = false;
	vm->dirty_logging = !err;
	pthread_mutex_unlock(&vm->dirty_lock);
	return err;
}

int kvm_vm__collect_dirty(struct kvm_vm *vm, struct kemari_dirty *d)
{
	uint64_t npages = vm->ram_size / KEMARI_PAGE_SIZE;
	int err;

	pthread_mutex_lock(&vm->dirty_lock);
	if (vm->dirty_ring) {
		err = kvm_vm__harvest(vm, d, NULL);
		if (vm->ring_lost) {
			kemari_dirty__mark_all(d);
			vm->ring_lost = false;
		}
	} else {
		err = kvm_vm__get_log(vm);
		if (!err)
			kemari_dirty__mark_bitmap(d, vm->kvm_bitmap, 0, npages);
	}
	/* Merge what backends wrote and what full rings handed over early. */
	for (uint64_t i = 0; i < vm->pend_count; i++) {
		uint64_t pfn = vm->pend_list[i];

		kemari_dirty__mark(d, pfn);
		vm->pend_bitmap[pfn / 64] = 0;
	}
	vm->pend_count = 0;
	pthread_mutex_unlock(&vm->dirty_lock);
	return err;
}

bool kvm_vm__pending(struct kvm_vm *vm, uint64_t pfn)
{
	bool set;

	pthread_mutex_lock(&vm->dirty_lock);
	set = (vm->pend_bitmap[pfn / 64] >> (pfn % 64)) & 1;
	pthread_mutex_unlock(&vm->dirty_lock);
	return set;
}
