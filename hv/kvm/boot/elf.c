// SPDX-License-Identifier: MIT
/*
 * Guest image loading and direct long-mode entry: the VMM writes the GDT and
 * identity page tables itself (Firecracker-style), so there is no firmware
 * and no real-mode stage.
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kvm.h"
#include "kemari/kemari.h"

#define PTE_P 0x1ULL
#define PTE_RW 0x2ULL
#define PTE_A 0x20ULL
#define PTE_D 0x40ULL
#define PTE_PS 0x80ULL

static int read_all(int fd, void *buf, size_t len, off_t off)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

int kvm_boot__load_elf(struct kvm_vm *vm, const char *path, uint64_t *entry,
		       uint64_t *image_end)
{
	Elf64_Ehdr eh;
	Elf64_Phdr *ph = NULL;
	struct stat st;
	uint64_t end = 0;
	bool entry_ok = false;
	int fd, err;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kemari_err(-errno, "guest image %s: %s", path,
				  strerror(errno));
	if (fstat(fd, &st) < 0 || (size_t)st.st_size < sizeof(eh) ||
	    read_all(fd, &eh, sizeof(eh), 0) ||
	    memcmp(eh.e_ident, ELFMAG, SELFMAG)) {
		err = kemari_err(
			-ENOEXEC,
			"guest image %s: not an ELF file (build one with 'make guests')",
			path);
		goto err_close;
	}
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_machine != EM_X86_64 ||
	    eh.e_ident[EI_DATA] != ELFDATA2LSB) {
		err = kemari_err(
			-ENOEXEC,
			"guest image %s: not an x86-64 ELF64 image (machine %u)",
			path, eh.e_machine);
		goto err_close;
	}
	if (eh.e_type != ET_EXEC || eh.e_phentsize != sizeof(Elf64_Phdr) ||
	    eh.e_phnum == 0 || eh.e_phnum > 64) {
		err = kemari_err(
			-ENOEXEC,
			"guest image %s: not a static executable with program headers",
			path);
		goto err_close;
	}
	ph = calloc(eh.e_phnum, sizeof(*ph));
	if (!ph) {
		err = -ENOMEM;
		goto err_close;
	}
	if (read_all(fd, ph, eh.e_phnum * sizeof(*ph), (off_t)eh.e_phoff)) {
		err = kemari_err(-ENOEXEC, "guest image %s: truncated", path);
		goto err_free;
	}
	for (unsigned int i = 0; i < eh.e_phnum; i++) {
		uint64_t pa = ph[i].p_paddr, msz = ph[i].p_memsz;

		if (ph[i].p_type != PT_LOAD || !msz)
			continue;
		if (ph[i].p_filesz > msz ||
		    ph[i].p_offset + ph[i].p_filesz > (uint64_t)st.st_size ||
		    pa + msz < pa) {
			err = kemari_err(
				-ENOEXEC,
				"guest image %s: segment %u is malformed", path,
				i);
			goto err_free;
		}
		if (pa < KEMARI_IMAGE_MIN_GPA) {
			err = kemari_err(
				-ENOEXEC,
				"guest image %s: segment at 0x%llx is below 0x%llx (link it at 1 MiB)",
				path, (unsigned long long)pa,
				(unsigned long long)KEMARI_IMAGE_MIN_GPA);
			goto err_free;
		}
		if (pa + msz > vm->ram_size) {
			err = kemari_err(
				-E2BIG,
				"guest image %s needs %llu MiB of RAM but --mem is %llu MiB: raise --mem",
				path,
				(unsigned long long)((pa + msz + (1 << 20) -
						      1) >>
						     20),
				(unsigned long long)(vm->ram_size >> 20));
			goto err_free;
		}
		err = read_all(fd, vm->ram + pa, ph[i].p_filesz,
			       (off_t)ph[i].p_offset);
		if (err) {
			err = kemari_err(err, "guest image %s: read failed",
					 path);
			goto err_free;
		}
		memset(vm->ram + pa + ph[i].p_filesz, 0, msz - ph[i].p_filesz);
		if (eh.e_entry >= pa && eh.e_entry < pa + msz)
			entry_ok = true;
		end = KEMARI_MAX(end, pa + msz);
	}
	if (!entry_ok) {
		err = kemari_err(
			-ENOEXEC,
			"guest image %s: entry point 0x%llx is not in a loaded segment",
			path, (unsigned long long)eh.e_entry);
		goto err_free;
	}
	*entry = eh.e_entry;
	*image_end = KEMARI_ALIGN_UP(end, KEMARI_PAGE_SIZE);
	err = 0;
err_free:
	free(ph);
err_close:
	close(fd);
	return err;
}

/*
 * Identity-map all RAM with 2 MiB pages; one PD page per GiB. Accessed and
 * dirty are preset: the CPU then never writes the tables during a page
 * walk, so they stay out of every epoch's dirty set, and no walk ever hits
 * a page that dirty tracking has just write-protected (a fault inside a
 * page walk, possibly inside an exception delivery).
 */
void kvm_boot__identity_map(struct kvm_vm *vm, uint64_t pml4_gpa,
			    uint64_t limit)
{
	uint64_t pdpt_gpa = pml4_gpa + 4096, pd_gpa = pml4_gpa + 2 * 4096;
	uint64_t *pml4 = kvm_vm__gpa(vm, pml4_gpa, 4096);
	uint64_t *pdpt = kvm_vm__gpa(vm, pdpt_gpa, 4096);
	uint64_t gib = (limit + (1ULL << 30) - 1) >> 30;

	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	pml4[0] = pdpt_gpa | PTE_P | PTE_RW | PTE_A;
	for (uint64_t g = 0; g < gib; g++) {
		uint64_t *pd = kvm_vm__gpa(vm, pd_gpa + g * 4096, 4096);

		pdpt[g] = (pd_gpa + g * 4096) | PTE_P | PTE_RW | PTE_A;
		for (uint64_t i = 0; i < 512; i++) {
			uint64_t pa = (g << 30) | (i << 21);

			pd[i] = pa < limit ? pa | PTE_P | PTE_RW | PTE_PS |
						     PTE_A | PTE_D
					   : 0;
		}
	}
}

static void kvm_boot__gdt(struct kvm_vm *vm)
{
	uint64_t *gdt = (uint64_t *)(vm->ram + KVM_GDT_GPA);

	gdt[0] = 0;
	gdt[1] = 0x00af9b000000ffffULL; /* 0x08: 64-bit code, DPL 0 */
	gdt[2] = 0x00cf93000000ffffULL; /* 0x10: data */
	gdt[3] = 0x00008b0000000067ULL; /* 0x18: busy 64-bit TSS at 0 */
	gdt[4] = 0;
}

int kvm_boot__setup(struct kvm_vm *vm, const char *path)
{
	uint64_t entry, image_end;
	int err;

	err = kvm_boot__load_elf(vm, path, &entry, &image_end);
	if (err)
		return err;
	kvm_boot__gdt(vm);
	kvm_boot__identity_map(vm, KVM_PML4_GPA, vm->ram_size);
	err = kvm_dev__write_bootinfo(vm, image_end);
	if (err)
		return err;
	for (unsigned int i = 0; i < vm->ncpus; i++) {
		struct kvm_boot_entry b = {
			.cs = 0x08,
			.ds = 0x10,
			.tr = 0x18,
			.gdt_base = KVM_GDT_GPA,
			.gdt_limit = 5 * 8 - 1,
			.cr3 = KVM_PML4_GPA,
			.rip = entry,
			.rdi = KEMARI_BOOTINFO_GPA,
			.rsi = i, /* the guest parks every vCPU but 0 */
		};

		err = kvm_cpu__set_boot_state(&vm->vcpus[i], &b);
		if (err)
			return err;
	}
	vm->loaded = true;
	return 0;
}
