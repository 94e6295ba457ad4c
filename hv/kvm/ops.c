// SPDX-License-Identifier: MIT
/* The KVM backend's hypervisor ops table. */
#include <errno.h>

#include "kemari/kemari.h"
#include "kvm.h"

extern const struct kemari_hv_ops kemari_hv_kvm;

static int kvm_ops__create(struct kemari_hv **out,
			   const struct kemari_hv_cfg *cfg)
{
	struct kvm_vm *vm;
	int err = kvm_vm__create(&vm, cfg);

	if (err)
		return err;
	vm->hv.ops = &kemari_hv_kvm;
	*out = &vm->hv;
	return 0;
}

static void kvm_ops__destroy(struct kemari_hv *hv)
{
	if (hv)
		kvm_vm__destroy(to_kvm(hv));
}

static int kvm_ops__load_guest(struct kemari_hv *hv, const char *path)
{
	struct kvm_vm *vm = to_kvm(hv);

	return vm->pc ? kvm_linux__load(vm) : kvm_boot__setup(vm, path);
}

static int kvm_ops__map_ram(struct kemari_hv *hv, void **base, uint64_t *size)
{
	struct kvm_vm *vm = to_kvm(hv);

	*base = vm->ram;
	*size = vm->ram_size;
	return 0;
}

static int kvm_ops__run(struct kemari_hv *hv)
{
	struct kvm_vm *vm = to_kvm(hv);
	int status;

	if (!vm->loaded)
		return kemari_err(-EINVAL,
				  "internal: no guest loaded or restored");
	status = kvm_cpu__run_all(vm);
	/* The guest's last words (a panic) before anything said of its
	 * end: the engine's lines, kemari-run's error line. */
	if (vm->pc)
		kvm_pc__console_end(vm);
	else
		kvm_console__end(vm);
	return status;
}

static void kvm_ops__stop(struct kemari_hv *hv)
{
	struct kvm_vm *vm = to_kvm(hv);

	atomic_store(&vm->stop, true);
	kvm_cpu__kick_all(vm);
}

static int kvm_ops__pause(struct kemari_hv *hv)
{
	return kvm_cpu__pause(to_kvm(hv));
}

static int kvm_ops__resume(struct kemari_hv *hv)
{
	return kvm_cpu__resume(to_kvm(hv));
}

static int kvm_ops__dirty_start(struct kemari_hv *hv)
{
	return kvm_vm__dirty_start(to_kvm(hv));
}

static int kvm_ops__collect_dirty(struct kemari_hv *hv, struct kemari_dirty *d)
{
	return kvm_vm__collect_dirty(to_kvm(hv), d);
}

static int kvm_ops__save_cpu(struct kemari_hv *hv, struct kemari_buf *out)
{
	return kvm_cpu__save(to_kvm(hv), out);
}

static int kvm_ops__load_cpu(struct kemari_hv *hv, const void *blob, size_t len)
{
	return kvm_cpu__load(to_kvm(hv), blob, len);
}

static int kvm_ops__save_dev(struct kemari_hv *hv, struct kemari_buf *out)
{
	struct kvm_vm *vm = to_kvm(hv);

	return vm->pc ? kvm_pc__save(vm, out) : kvm_dev__save(vm, out);
}

static int kvm_ops__load_dev(struct kemari_hv *hv, const void *blob, size_t len)
{
	struct kvm_vm *vm = to_kvm(hv);

	return vm->pc ? kvm_pc__load(vm, blob, len)
		      : kvm_dev__load(vm, blob, len);
}

/*
 * Takeover: the last steps before the vCPUs resume. A Linux guest's
 * kvmclock learns it was stopped (no watchdog fires over the gap), then
 * the virtio queues the old primary left with requests are served.
 */
static int kvm_ops__reattach(struct kemari_hv *hv)
{
	struct kvm_vm *vm = to_kvm(hv);
	int err;

	if (!vm->pc)
		return kvm_dev__reattach(vm);
	err = kvm_state__kvmclock_ctrl(vm);
	return err ?: kvm_pc__reattach(vm, true);
}

static int kvm_ops__open_disk(struct kemari_hv *hv)
{
	struct kvm_vm *vm = to_kvm(hv);

	return vm->pc ? kvm_pc__open_disk(vm) : kvm_blk__open_disk(vm);
}

/*
 * A Linux guest's TAP stays: each host has its own on the bridge, and the
 * new primary's announcement moves the guest's MAC to its port.
 */
static int kvm_ops__detach(struct kemari_hv *hv)
{
	struct kvm_vm *vm = to_kvm(hv);

	if (!vm->pc)
		kvm_dev__detach(vm);
	return 0;
}

static int kvm_ops__flush(struct kemari_hv *hv)
{
	return kvm_dev__flush(to_kvm(hv));
}

static int kvm_ops__guest_stat(struct kemari_hv *hv, unsigned int i,
			       uint64_t *val)
{
	struct kvm_vm *vm = to_kvm(hv);
	const struct kemari_bootinfo *bi =
		(const struct kemari_bootinfo *)(vm->ram + KEMARI_BOOTINFO_GPA);

	if (i >= KEMARI_NSTATS)
		return -EINVAL;
	*val = bi->stats[i];
	return 0;
}

static int kvm_ops__crash(struct kemari_hv *hv)
{
	return kvm_cpu__crash(&to_kvm(hv)->vcpus[0]);
}

static int kvm_ops__tsc_khz(struct kemari_hv *hv, uint32_t *khz,
			    bool *can_scale)
{
	kvm_state__tsc(to_kvm(hv), khz, can_scale);
	return 0;
}

const struct kemari_hv_ops kemari_hv_kvm = {
	.name = "kvm",
	.create = kvm_ops__create,
	.destroy = kvm_ops__destroy,
	.load_guest = kvm_ops__load_guest,
	.map_ram = kvm_ops__map_ram,
	.run = kvm_ops__run,
	.stop = kvm_ops__stop,
	.pause = kvm_ops__pause,
	.resume = kvm_ops__resume,
	.dirty_start = kvm_ops__dirty_start,
	.collect_dirty = kvm_ops__collect_dirty,
	.save_cpu = kvm_ops__save_cpu,
	.load_cpu = kvm_ops__load_cpu,
	.save_dev = kvm_ops__save_dev,
	.load_dev = kvm_ops__load_dev,
	.reattach = kvm_ops__reattach,
	.detach = kvm_ops__detach,
	.open_disk = kvm_ops__open_disk,
	.flush = kvm_ops__flush,
	.guest_stat = kvm_ops__guest_stat,
	.crash = kvm_ops__crash,
	.tsc_khz = kvm_ops__tsc_khz,
};
