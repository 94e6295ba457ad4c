// SPDX-License-Identifier: MIT
/*
 * Runs inside the emulated test VM (tests/vm/vm.sh puts it in the
 * initramfs): holds one KVM VM with one vCPU and no in-kernel irqchip open
 * for the VM's whole life, then sleeps.
 *
 * Why: creating the first VM and its first vCPU flips two static keys of
 * the kernel (preempt notifiers, used inside __schedule, and
 * kvm_has_noapic_vcpu), and destroying the last flips them back; each flip
 * live-patches kernel text with int3 breakpoints while the other CPU runs.
 * Under QEMU TCG with two vCPUs that patching now and then leaves a vCPU
 * executing a stale translation of the int3 forever, and the whole VM
 * freezes with interrupts off. The tests create and destroy VMs all the
 * time; with this process holding one, the counts never return to zero,
 * so the text is patched once, at boot, and never again.
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(void)
{
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC), vm, vcpu;

	if (kvm < 0) {
		perror("kvm-keeper: /dev/kvm");
		return 1;
	}
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	vcpu = vm < 0 ? -1 : ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0) {
		perror("kvm-keeper: KVM_CREATE_VM/VCPU");
		return 1;
	}
	for (;;)
		pause();
}
