/* SPDX-License-Identifier: MIT */
/* Built-in minimal KVM VMM: internal interfaces shared by hv/kvm/ files. */
#ifndef KEMARI_HV_KVM_H
#define KEMARI_HV_KVM_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "kemari/abi.h"
#include "kemari/buf.h"
#include "kemari/hv.h"
#include "kemari/kemari.h"

#define KVM_MAX_VCPUS 8
#define KVM_MAX_RAM (16ULL << 30)
#define KVM_MIN_RAM (2ULL << 20)
#define KVM_GDT_GPA 0x1000ULL
#define KVM_PML4_GPA 0x2000ULL /* then the PDPT, then a PD per GiB */
/* PC platform: pages KVM itself needs below 4 GiB, inside the PCI hole. */
#define KVM_PC_IDENTITY_MAP_GPA 0xfeffc000ULL
#define KVM_PC_TSS_GPA 0xfeffd000ULL

struct kvm_vm;
struct kvm_dev;
struct kvm_pc;
struct kvm_state;

struct kvm_vcpu {
	struct kvm_vm *vm;
	unsigned int id;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool thread_started;
	bool parked;		    /* out of KVM_RUN, waiting for resume */
	struct kvm_dirty_gfn *ring; /* dirty ring, NULL in bitmap mode */
	uint32_t ring_entries;
	uint32_t ring_fetch; /* next entry to harvest */
	/* The registers last saved or restored: KVM resets a vCPU on a
	 * triple fault, so a post-mortem starts from these. */
	struct kvm_regs last_regs;
	struct kvm_sregs last_sregs;
	bool have_last;
};

struct kvm_dev_ops {
	/* Serve the requests queued on queue q (the event was released). */
	int (*process)(struct kvm_dev *dev, unsigned int q);
	/* Input: an fd to wait on (-1: none) and delivery when readable. */
	int (*pollfd)(struct kvm_dev *dev);
	int (*input)(struct kvm_dev *dev);
	/* Connect to rings already in guest memory (after a restore). */
	int (*reattach)(struct kvm_dev *dev);
	/* Let go of the outside world (a switchover); reattach takes it
	 * back. Optional. */
	void (*detach)(struct kvm_dev *dev);
	int (*flush)(struct kvm_dev *dev);
	void (*destroy)(struct kvm_dev *dev);
};

struct kvm_dev {
	const struct kvm_dev_ops *ops;
	struct kvm_vm *vm;
	unsigned int index;
	uint32_t type; /* enum kemari_dev_type */
	uint64_t ring_gpa;
	unsigned int nqueues;
	uint64_t capacity;
	/* Per-queue: tapped kicks become events; else served at once. */
	enum kemari_event_kind kind[2];
	bool tapped[2];
};

struct kvm_event {
	struct kemari_event ev;
	struct kvm_dev *dev;
	bool released;
};

/* A KVM memory slot over part of the one RAM mapping. */
struct kvm_slot {
	uint64_t gpa, size;
	uint64_t off; /* into vm->ram */
};

struct kvm_vm {
	struct kemari_hv hv;
	struct kemari_hv_cfg cfg;
	int sys_fd;
	int vm_fd;
	int vcpu_mmap_size;
	uint8_t *ram;
	uint64_t ram_size;
	struct kvm_slot slots[2];
	unsigned int nslots;
	bool pc;	       /* PC platform for a Linux guest (cfg.kernel) */
	struct kvm_pc *pc_dev; /* its devices (pc.c) */
	struct kvm_state *state; /* its vCPU state layout, probed (state.c) */
	struct kemari_buf verify_cpu, verify_dev; /* kvm_vm__verify_restore */
	/*
	 * Pages dirtied but not yet collected that KVM will not report again:
	 * those written by the VMM itself (device backends, never in KVM's
	 * log) and those harvested early from a full dirty ring. A bitmap
	 * for de-duplication plus a list, so collection is O(dirty).
	 */
	pthread_mutex_t dirty_lock;
	uint64_t *pend_bitmap;
	uint64_t *pend_list;
	uint64_t pend_count;
	bool dirty_logging;
	bool manual_protect;
	bool dirty_ring; /* KVM dirty ring instead of KVM_GET_DIRTY_LOG */
	/* A ring ran past its end (kvm_vm__harvest): entries may be lost,
	 * so the next collection takes all RAM. */
	bool ring_lost;
	unsigned int ring_overflows; /* how many times, for the warning */
	unsigned int ring_empty_exits; /* ring-full exits in a row, empty */
	uint32_t ring_bytes;
	uint64_t *kvm_bitmap; /* scratch for KVM_GET_DIRTY_LOG */

	unsigned int ncpus;
	struct kvm_vcpu vcpus[KVM_MAX_VCPUS];
	struct kvm_dev *devs[KEMARI_MAX_DEVS];
	unsigned int ndevs;

	/* Run state */
	atomic_bool stop;
	atomic_int exit_status; /* guest status, or negative errno */
	bool loaded;		/* guest image or restored state present */
	uint64_t next_tick_ns;
	pthread_mutex_t lock; /* serializes device and hook work across vCPUs */

	/* Pause protocol (N vCPUs). */
	pthread_mutex_t pause_lock;
	pthread_cond_t pause_cond;
	atomic_bool pause_req;
	unsigned int nparked;
	int timer_armed;
	void *timer; /* timer_t */
};

static inline struct kvm_vm *to_kvm(struct kemari_hv *hv)
{
	return kemari_container_of(hv, struct kvm_vm, hv);
}

/* vm.c: VM, RAM, dirty tracking */
/* Whether KVM pages guests by shadow page tables (vm.c says how told). */
bool kvm_vm__shadow_paging_of(const char *flags, int npt, int ept);
int kvm_vm__create(struct kvm_vm **out, const struct kemari_hv_cfg *cfg);
void kvm_vm__destroy(struct kvm_vm *vm);
/* Bounds-checked pointer into guest RAM, NULL if [gpa, gpa+len) is outside
 * one memory slot. */
void *kvm_vm__gpa(struct kvm_vm *vm, uint64_t gpa, uint64_t len);
/* Drive an interrupt line (GSI) of the in-kernel irqchip (PC platform). */
int kvm_vm__irq_line(struct kvm_vm *vm, unsigned int gsi, int level);
/* Record a VMM write to guest RAM so the next dirty collection sees it. */
void kvm_vm__mark_dirty(struct kvm_vm *vm, uint64_t gpa, uint64_t len);
/* A vCPU's dirty ring filled up: move its entries to the pending set. */
int kvm_vm__ring_full(struct kvm_vm *vm);
int kvm_vm__map_ring(struct kvm_vm *vm, struct kvm_vcpu *vcpu);
void kvm_vm__unmap_ring(struct kvm_vm *vm, struct kvm_vcpu *vcpu);
/* Is pfn in the pending set (backend-written, not yet collected)? */
bool kvm_vm__pending(struct kvm_vm *vm, uint64_t pfn);
int kvm_vm__dirty_start(struct kvm_vm *vm);
int kvm_vm__collect_dirty(struct kvm_vm *vm, struct kemari_dirty *d);

/*
 * vm.c: the in-kernel platform's state (PC): kvmclock, both PICs, the
 * IOAPIC and the PIT. Plain data, carried in the cpu blob (state.c).
 */
struct kvm_vm_clock {
	struct kvm_clock_data kvm;
	/* Host CLOCK_REALTIME at the reading: KVM's own where it gives one
	 * (KVM_CLOCK_REALTIME), else ours, bracketing the ioctl. */
	uint64_t realtime_ns;
};

struct kvm_vm_state {
	struct kvm_vm_clock clock;
	struct kvm_irqchip chip[3]; /* PIC master, PIC slave, IOAPIC */
	struct kvm_pit_state2 pit;
};

/* KVM_GET_CLOCK now (paused). */
int kvm_vm__get_clock(struct kvm_vm *vm, struct kvm_vm_clock *c);
/* The PICs, IOAPIC and PIT (not the clock: kvm_vm__get_clock). */
int kvm_vm__get_state(struct kvm_vm *vm, struct kvm_vm_state *s);
/*
 * Restore s before any vCPU state: the clock (advanced by the real time
 * since it was read; with clock false, left running), the PICs and
 * IOAPIC, then the PIT.
 */
int kvm_vm__set_state(struct kvm_vm *vm, const struct kvm_vm_state *s,
		      bool clock);
/*
 * Testing (the restore self-check): save the paused VM's vCPU and device
 * state and load it straight back, as a takeover would (without the
 * takeover's kicks and KVM_KVMCLOCK_CTRL; kvmclock and the TSCs, which
 * never stopped, run on: state.c), so a guest that keeps running normally
 * under it shows the state is complete. Loading a just-saved blob with
 * load_cpu/load_dev does the same. Called like save_cpu: VM paused,
 * device lock held.
 */
int kvm_vm__verify_restore(struct kvm_vm *vm);

/*
 * state.c: the complete vCPU state of a PC-platform VM (with the VM state
 * above), as the cpu blob. Probed once at creation, before any vCPU ran.
 */
int kvm_state__create(struct kvm_vm *vm);
void kvm_state__destroy(struct kvm_vm *vm);
int kvm_state__save(struct kvm_vm *vm, struct kemari_buf *out);
int kvm_state__load(struct kvm_vm *vm, const void *blob, size_t len);
/* Takeover, before the vCPUs resume: tell kvmclock guests they were
 * stopped (KVM_KVMCLOCK_CTRL), so their watchdogs do not fire. */
int kvm_state__kvmclock_ctrl(struct kvm_vm *vm);
/* vCPU 0's TSC kHz (0 without a PC platform's state) and TSC scaling. */
void kvm_state__tsc(struct kvm_vm *vm, uint32_t *khz, bool *can_scale);

/* boot/elf.c: freestanding image loading and long-mode entry */
int kvm_boot__load_elf(struct kvm_vm *vm, const char *path, uint64_t *entry,
		       uint64_t *image_end);
int kvm_boot__setup(struct kvm_vm *vm, const char *path);
/* Identity-map [0, limit) with 2 MiB pages: PML4 at pml4, PDPT on the next
 * page, then one PD page per GiB. */
void kvm_boot__identity_map(struct kvm_vm *vm, uint64_t pml4, uint64_t limit);

/* hw/disk.c: a disk FLUSH (fdatasync): 0 or negative errno. */
int kvm_disk__sync(int fd);

/*
 * hw/disk.c: open --disk read-write, with create making it zero-filled at
 * size bytes when missing or empty (a secondary never creates it: -ENOENT
 * when missing); its size in *bytes. One clear line on failure.
 */
int kvm_disk__open(const char *path, uint64_t size, bool create, int *out,
		   uint64_t *bytes);

/* hw/tap.c: --net=tap:IFNAME[,bridge=BR][,mac=MAC] */
struct kvm_tap_cfg {
	char ifname[16], bridge[16];
	uint8_t mac[6];
};
/* Parse a tap: spec (one clear line and -EINVAL if malformed). */
int kvm_tap__parse(const char *spec, struct kvm_tap_cfg *c);
/* Create or attach the TAP, bring it up, join the bridge: a nonblocking fd. */
int kvm_tap__open(const struct kvm_tap_cfg *c, int *out);

/* boot/linux.c: a bzImage, initrd and command line through the boot protocol */
int kvm_linux__load(struct kvm_vm *vm);
/* Kernel and initrd usable? Checked before anything is created. */
int kvm_linux__check(const struct kemari_hv_cfg *cfg);

/* pc.c: the PC platform's devices (UART, i8042, RTC, PCI, virtio) */
struct kvm_mp_pci_irq;
/* The PCI INTx routes of the devices present, for the MP table. */
unsigned int kvm_pc__pci_routes(struct kvm_vm *vm, struct kvm_mp_pci_irq *r,
				unsigned int max);
/* One port access of the guest (vm->lock held). */
int kvm_pc__io(struct kvm_vm *vm, uint16_t port, bool in, void *data,
	       unsigned int size);
/* The devices of the platform (at VM creation), and their end. */
int kvm_pc__create(struct kvm_vm *vm);
void kvm_pc__destroy(struct kvm_vm *vm);
/* The secondary's deferred disk, opened (again) after the handshake. */
int kvm_pc__open_disk(struct kvm_vm *vm);
/* The guest stopped: a console line it has not ended is printed now. */
void kvm_pc__console_end(struct kvm_vm *vm);
/* The I/O thread delivering input (received frames) while the VM runs. */
int kvm_pc__start_io(struct kvm_vm *vm);
void kvm_pc__stop_io(struct kvm_vm *vm);
/* The devices' state as the dev blob (paused, device lock held). */
int kvm_pc__save(struct kvm_vm *vm, struct kemari_buf *out);
/* Load it into the same devices: after kvm_state__load (it restored the
 * interrupt controllers the devices' lines lead to). */
int kvm_pc__load(struct kvm_vm *vm, const void *blob, size_t len);
/*
 * Re-read every virtio queue's indices from guest memory; with kick, serve
 * the queues holding requests (through the event hook): only where output
 * may flow, i.e. at takeover.
 */
int kvm_pc__reattach(struct kvm_vm *vm, bool kick);

/* cpu.c: vCPUs, run loop, pause, state */
/* The XCR0 a guest starts with, leaf 0xD trimmed to it (cpu.c). */
uint64_t kvm_cpuid__xcr0(struct kvm_cpuid2 *c);
void kvm_cpuid__adjust(struct kvm_cpuid2 *c, unsigned int id, bool deadline,
		       bool la57);
int kvm_cpu__create(struct kvm_vm *vm, unsigned int id);
void kvm_cpu__destroy(struct kvm_vcpu *vcpu);
/*
 * Straight into 64-bit mode, as both loaders enter their guests: flat code
 * and data segments of the GDT at gdt_base, paging on with the tables at
 * cr3, interrupts off, no IDT; a busy TSS at selector tr unless it is 0.
 */
struct kvm_boot_entry {
	uint16_t cs, ds, tr;
	uint16_t gdt_limit;
	uint64_t gdt_base, cr3;
	uint64_t rip, rdi, rsi;
};
int kvm_cpu__set_boot_state(struct kvm_vcpu *vcpu,
			    const struct kvm_boot_entry *b);
int kvm_cpu__run_all(struct kvm_vm *vm);
int kvm_cpu__pause(struct kvm_vm *vm);
int kvm_cpu__resume(struct kvm_vm *vm);
void kvm_cpu__kick_all(struct kvm_vm *vm);
int kvm_cpu__save(struct kvm_vm *vm, struct kemari_buf *out);
int kvm_cpu__load(struct kvm_vm *vm, const void *blob, size_t len);
/*
 * The guest ended by itself with status (its exit port, or how: "reset
 * the machine (reboot)"): one info line with the RIP of the calling vCPU
 * thread's vCPU, which is at the instruction that ended it.
 */
void kvm_cpu__note_end(struct kvm_vm *vm, const char *how, int status);
/* Testing: the vCPU triple-faults when it next runs. */
int kvm_cpu__crash(struct kvm_vcpu *vcpu);

/* kemari/dev.c: the freestanding devices: rings, kick dispatch, boot info */
int kvm_dev__kick(struct kvm_vm *vm, uint16_t port, uint32_t value);
int kvm_dev__idle(struct kvm_vm *vm, int timeout_ms);
int kvm_dev__register(struct kvm_vm *vm, struct kvm_dev *dev, uint32_t type,
		      unsigned int nqueues, uint64_t capacity);
int kvm_dev__write_bootinfo(struct kvm_vm *vm, uint64_t image_end);
struct kemari_ring *kvm_dev__ring(struct kvm_dev *dev, unsigned int q);
/* Take the next request of a queue, or NULL when it is empty. */
const struct kemari_req *kvm_ring__peek(struct kvm_dev *dev,
					struct kemari_ring *r);
/* Answer the request at req_cons and consume it. */
int kvm_ring__respond(struct kvm_dev *dev, struct kemari_ring *r,
		      const struct kemari_rsp *rsp);
int kvm_dev__save(struct kvm_vm *vm, struct kemari_buf *out);
int kvm_dev__load(struct kvm_vm *vm, const void *blob, size_t len);
int kvm_dev__reattach(struct kvm_vm *vm);
void kvm_dev__detach(struct kvm_vm *vm);
int kvm_dev__flush(struct kvm_vm *vm);
void kvm_dev__destroy_all(struct kvm_vm *vm);

/* kemari/: the freestanding devices */
int kvm_console__create(struct kvm_vm *vm);
/* The guest stopped: print what its console holds back (its last lines). */
void kvm_console__end(struct kvm_vm *vm);
int kvm_blk__create(struct kvm_vm *vm, const char *path, uint64_t size);
/* The secondary's deferred disk, opened (again) after the handshake. */
int kvm_blk__open_disk(struct kvm_vm *vm);
int kvm_net__create(struct kvm_vm *vm, const char *spec, bool defer_bind);

#endif
