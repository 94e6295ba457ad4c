// SPDX-License-Identifier: MIT
/*
 * Linux loader: a bzImage as distributions ship it, booted through the
 * 64-bit boot protocol (Documentation/arch/x86/boot.rst): the protected-mode
 * kernel at its load address, the initrd as high as the header allows, the
 * command line, the zero page, an MP table for the CPUs and PCI interrupt
 * routes, a GDT with __BOOT_CS/__BOOT_DS, identity page tables, and the
 * boot vCPU entering at load address + 0x200 with RSI = the zero page. The
 * other vCPUs wait in KVM for the INIT/SIPI the kernel sends them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kvm.h"
#include "kemari/kemari.h"
#include "linux_boot.h"

/* Guest-physical layout of what the loader writes below 1 MiB. */
#define LINUX_GDT_GPA 0x500ULL
#define LINUX_ZERO_PAGE_GPA 0x7000ULL
#define LINUX_PML4_GPA 0x9000ULL /* then the PDPT and 4 PDs: 4 GiB mapped */
#define LINUX_CMDLINE_GPA 0x20000ULL
#define LINUX_CMDLINE_MAX 0x10000ULL
#define LINUX_MPTABLE_GPA KVM_E820_EBDA_START
#define LINUX_BOOT_CS 0x10
#define LINUX_BOOT_DS 0x18

/* The whole file, for the header check and the copy. */
static int linux__read_file(const char *what, const char *path, void **out,
			    size_t *len)
{
	struct stat st;
	uint8_t *buf;
	size_t got = 0;
	int fd, err;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kemari_err(-errno, "%s %s: %s", what, path,
				  strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		err = kemari_err(-EINVAL, "%s %s: not a regular file", what,
				 path);
		goto err_close;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		err = -ENOMEM;
		goto err_close;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = kemari_err(n < 0 ? -errno : -EIO,
					 "%s %s: read failed", what, path);
			free(buf);
			goto err_close;
		}
		got += (size_t)n;
	}
	close(fd);
	*out = buf;
	*len = got;
	return 0;

err_close:
	close(fd);
	return err;
}

static void linux__gdt(struct kvm_vm *vm)
{
	uint64_t *gdt = kvm_vm__gpa(vm, LINUX_GDT_GPA, 4 * 8);

	gdt[0] = 0;
	gdt[1] = 0;
	gdt[2] = 0x00af9b000000ffffULL; /* __BOOT_CS: 64-bit code */
	gdt[3] = 0x00cf93000000ffffULL; /* __BOOT_DS: data */
}

/* The kernel unpacks itself to init_size bytes from its load address. */
static int linux__fits(const struct kvm_bzimage *bz, const char *path,
		       uint64_t ram_size)
{
	uint64_t need = kvm_bzimage__load_addr(bz) + bz->init_size;

	if (need <= kvm_e820__below_hole(ram_size))
		return 0;
	return kemari_err(
		-E2BIG,
		"kernel %s needs %llu MiB of RAM to unpack: raise --mem", path,
		(unsigned long long)((need + (1 << 20) - 1) >> 20));
}

int kvm_linux__check(const struct kemari_hv_cfg *cfg)
{
	struct kvm_bzimage bz;
	struct stat st;
	void *img;
	size_t len;
	int err;

	err = linux__read_file("kernel", cfg->kernel, &img, &len);
	if (err)
		return err;
	err = kvm_bzimage__parse(img, len, cfg->kernel, &bz);
	free(img);
	if (err)
		return err;
	err = linux__fits(&bz, cfg->kernel, cfg->mem_size);
	if (err)
		return err;
	if (cfg->initrd && stat(cfg->initrd, &st) < 0)
		return kemari_err(-errno, "initrd %s: %s", cfg->initrd,
				  strerror(errno));
	if (cfg->initrd && !S_ISREG(st.st_mode))
		return kemari_err(-EINVAL, "initrd %s: not a regular file",
				  cfg->initrd);
	return 0;
}

int kvm_linux__load(struct kvm_vm *vm)
{
	const struct kemari_hv_cfg *cfg = &vm->cfg;
	const char *cmdline = cfg->cmdline ? cfg->cmdline : "";
	size_t klen, ilen = 0, clen = strlen(cmdline);
	struct kvm_linux_boot lb = { .ram_size = vm->ram_size };
	struct kvm_mp_pci_irq routes[32];
	unsigned int nroutes = kvm_pc__pci_routes(vm, routes, 32);
	struct kvm_bzimage bz;
	void *kimg = NULL, *iimg = NULL;
	uint64_t load;
	uint8_t *dst;
	int n, err;

	err = linux__read_file("kernel", cfg->kernel, &kimg, &klen);
	if (err)
		return err;
	err = kvm_bzimage__parse(kimg, klen, cfg->kernel, &bz);
	if (err)
		goto out;
	load = kvm_bzimage__load_addr(&bz);
	dst = kvm_vm__gpa(vm, load, bz.kernel_size);
	err = dst ? linux__fits(&bz, cfg->kernel, vm->ram_size) : -E2BIG;
	if (err)
		goto out;
	memcpy(dst, (uint8_t *)kimg + bz.kernel_offset, bz.kernel_size);
	if (cfg->initrd) {
		err = linux__read_file("initrd", cfg->initrd, &iimg, &ilen);
		err = err
			      ?: kvm_bzimage__initrd_addr(&bz, vm->ram_size,
							  load, ilen,
							  cfg->initrd,
							  &lb.initrd_gpa);
		if (err)
			goto out;
		memcpy(kvm_vm__gpa(vm, lb.initrd_gpa, ilen), iimg, ilen);
		lb.initrd_size = ilen;
	}
	if (clen >= LINUX_CMDLINE_MAX) {
		err = kemari_err(-E2BIG, "--append: %zu bytes is too long",
				 clen);
		goto out;
	}
	memcpy(kvm_vm__gpa(vm, LINUX_CMDLINE_GPA, clen + 1), cmdline, clen + 1);
	lb.cmdline_gpa = LINUX_CMDLINE_GPA;
	lb.cmdline_len = clen;
	err = kvm_bzimage__zero_page(kvm_vm__gpa(vm, LINUX_ZERO_PAGE_GPA,
						 sizeof(struct boot_params)),
				     &bz, &lb);
	if (err)
		goto out;
	n = kvm_mptable__build(kvm_vm__gpa(vm, LINUX_MPTABLE_GPA, 0x400), 0x400,
			       LINUX_MPTABLE_GPA, vm->ncpus, routes, nroutes);
	if (n < 0) {
		err = kemari_err(n, "MP table for %u vCPUs: %s", vm->ncpus,
				 strerror(-n));
		goto out;
	}
	linux__gdt(vm);
	/* The low 4 GiB: kernel, zero page, command line and initrd. */
	kvm_boot__identity_map(vm, LINUX_PML4_GPA, 4ULL << 30);
	err = kvm_cpu__set_boot_state(&vm->vcpus[0],
				      &(struct kvm_boot_entry){
					      .cs = LINUX_BOOT_CS,
					      .ds = LINUX_BOOT_DS,
					      .gdt_base = LINUX_GDT_GPA,
					      .gdt_limit = 4 * 8 - 1,
					      .cr3 = LINUX_PML4_GPA,
					      .rip = load + 0x200,
					      .rsi = LINUX_ZERO_PAGE_GPA,
				      });
	if (!err)
		vm->loaded = true;
out:
	free(kimg);
	free(iimg);
	return err;
}
