// SPDX-License-Identifier: MIT
/*
 * The Linux x86 boot protocol (Documentation/arch/x86/boot.rst) for a 64-bit
 * entry: check a bzImage's setup header, decide where the kernel and the
 * initrd go, and build the zero page. The 16-bit setup code in the image is
 * never run: the VMM enters the kernel in long mode at load address + 0x200
 * with RSI pointing at the zero page.
 */
#include <errno.h>
#include <string.h>

#include "kemari/kemari.h"
#include "linux_boot.h"

#define BZ_BOOT_FLAG_OFF 0x1fe
#define BZ_BOOT_FLAG 0xaa55
#define BZ_JUMP_OFF 0x200
#define BZ_JUMP_SHORT 0xeb
#define BZ_HDRS_OFF 0x202
#define BZ_HDRS 0x53726448U /* "HdrS" little-endian */
#define BZ_SECTOR 512U
#define BZ_HDR_END (KVM_BZIMAGE_HDR_OFF + sizeof(struct setup_header))
/* Everything parse reads must lie inside the header the image declares. */
#define BZ_HDR_NEEDED                                                          \
	(KVM_BZIMAGE_HDR_OFF + offsetof(struct setup_header, init_size) +      \
	 sizeof(uint32_t))
/*
 * Setup heap end for the 16-bit code, as boot.rst's sample loader: only
 * the real-mode entry would use it, harmless for the 64-bit one.
 */
#define BZ_HEAP_END_PTR (0xe000 - 0x200)
#define MIB(x) ((unsigned long long)(x) >> 20)

int kvm_bzimage__parse(const void *img, size_t len, const char *path,
		       struct kvm_bzimage *out)
{
	const uint8_t *p = img;
	struct setup_header h;
	size_t hdr_end;

	if (len >= 4 && !memcmp(p, "\177ELF", 4))
		return kemari_err(
			-ENOEXEC,
			"kernel %s: an ELF vmlinux, not a bzImage: pass Debian's vmlinuz (/boot/vmlinuz-*)",
			path);
	if (len < BZ_HDR_END)
		return kemari_err(
			-ENOEXEC,
			"kernel %s: %zu bytes is too small for a bzImage: pass Debian's vmlinuz",
			path, len);
	memcpy(&h, p + KVM_BZIMAGE_HDR_OFF, sizeof(h));
	if (h.boot_flag != BZ_BOOT_FLAG)
		return kemari_err(
			-ENOEXEC,
			"kernel %s: not a bzImage (no 0xAA55 boot flag at 0x1fe): pass Debian's vmlinuz",
			path);
	if (h.header != BZ_HDRS)
		return kemari_err(
			-ENOEXEC,
			"kernel %s: not a bzImage (no HdrS magic): pass Debian's vmlinuz",
			path);
	if (h.version < KVM_BZIMAGE_MIN_VERSION)
		return kemari_err(
			-ENOEXEC,
			"kernel %s: boot protocol %u.%02u is older than 2.12 (no xloadflags): pass a Linux 3.8 or newer kernel",
			path, h.version >> 8, h.version & 0xff);
	/*
	 * boot.rst: the header ends at 0x202 + the byte at 0x201, the
	 * target of the short jump at 0x200 over it.
	 */
	hdr_end = BZ_HDRS_OFF + p[BZ_JUMP_OFF + 1];
	if (p[BZ_JUMP_OFF] != BZ_JUMP_SHORT || hdr_end < BZ_HDR_NEEDED)
		return kemari_err(
			-ENOEXEC,
			"kernel %s: corrupt bzImage (setup header ends at 0x%zx, before init_size)",
			path, hdr_end);
	if (!h.relocatable_kernel)
		return kemari_err(
			-ENOEXEC,
			"kernel %s: not relocatable (built without CONFIG_RELOCATABLE): pass Debian's vmlinuz",
			path);
	if (!(h.xloadflags & XLF_KERNEL_64))
		return kemari_err(
			-ENOEXEC,
			"kernel %s: no 64-bit entry point (xloadflags 0x%x lacks XLF_KERNEL_64): pass an x86-64 kernel",
			path, h.xloadflags);
	memset(out, 0, sizeof(*out));
	out->setup_sects = h.setup_sects ? h.setup_sects : 4;
	out->kernel_offset = (out->setup_sects + 1) * BZ_SECTOR;
	if (out->kernel_offset >= len)
		return kemari_err(
			-ENOEXEC,
			"kernel %s: setup_sects %u puts the kernel at byte %zu of a %zu-byte file: truncated bzImage",
			path, out->setup_sects, out->kernel_offset, len);
	if (!h.kernel_alignment ||
	    (h.kernel_alignment & (h.kernel_alignment - 1)))
		return kemari_err(
			-ENOEXEC,
			"kernel %s: corrupt bzImage (kernel_alignment 0x%x is not a power of two)",
			path, h.kernel_alignment);
	if (!h.init_size)
		return kemari_err(-ENOEXEC,
				  "kernel %s: corrupt bzImage (init_size is 0)",
				  path);
	out->version = h.version;
	out->kernel_size = len - out->kernel_offset;
	out->initrd_addr_max = h.initrd_addr_max;
	out->cmdline_size = h.cmdline_size;
	out->pref_address = h.pref_address;
	out->kernel_alignment = h.kernel_alignment;
	out->init_size = h.init_size;
	out->xloadflags = h.xloadflags;
	/* Keep only the bytes this kernel declares; newer fields stay 0. */
	out->hdr_len = KEMARI_MIN(hdr_end, BZ_HDR_END) - KVM_BZIMAGE_HDR_OFF;
	memcpy(&out->hdr, &h, out->hdr_len);
	return 0;
}

uint64_t kvm_bzimage__load_addr(const struct kvm_bzimage *bz)
{
	uint64_t a = bz->pref_address;

	/*
	 * A header asking for low memory or for the PCI hole and above gets
	 * the usual 16 MiB; a relocatable kernel may start at any multiple
	 * of kernel_alignment.
	 */
	if (a < KVM_BZIMAGE_MIN_LOAD || a >= KVM_E820_PCI_HOLE_START)
		a = KVM_BZIMAGE_DEFAULT_LOAD;
	return KEMARI_ALIGN_UP(a, (uint64_t)bz->kernel_alignment);
}

int kvm_bzimage__initrd_addr(const struct kvm_bzimage *bz, uint64_t ram_size,
			     uint64_t kernel_gpa, uint64_t initrd_size,
			     const char *path, uint64_t *gpa)
{
	uint64_t ram_end = kvm_e820__below_hole(ram_size);
	uint64_t limit = KEMARI_MIN((uint64_t)bz->initrd_addr_max + 1, ram_end);
	/*
	 * Without KASLR the decompressor runs the kernel at
	 * max(load address, LOAD_PHYSICAL_ADDR), the latter being
	 * pref_address, and needs init_size bytes from there. With KASLR it
	 * picks a place avoiding the initrd itself.
	 */
	uint64_t start = KEMARI_MAX(kernel_gpa, bz->pref_address);
	uint64_t kernel_end, addr;

	*gpa = 0;
	if (!initrd_size)
		return 0;
	if (start <= limit && bz->init_size <= limit - start) {
		kernel_end = KEMARI_ALIGN_UP(start + bz->init_size,
					     KEMARI_PAGE_SIZE);
		addr = initrd_size <= limit
			       ? (limit - initrd_size) & ~(KEMARI_PAGE_SIZE - 1)
			       : 0;
		if (initrd_size <= limit && addr >= kernel_end) {
			*gpa = addr;
			return 0;
		}
	}
	if (limit < ram_end)
		return kemari_err(
			-E2BIG,
			"initrd %s (%llu KiB) does not fit between the kernel (up to %llu MiB) and the kernel's initrd_addr_max 0x%x: use a smaller initrd",
			path, (unsigned long long)(initrd_size >> 10),
			MIB(start + bz->init_size + (1 << 20) - 1),
			bz->initrd_addr_max);
	return kemari_err(
		-E2BIG,
		"initrd %s (%llu KiB) does not fit: the kernel needs RAM up to %llu MiB and the initrd goes above it, but --mem is %llu MiB: raise --mem to at least %llu MiB",
		path, (unsigned long long)(initrd_size >> 10),
		MIB(start + bz->init_size + (1 << 20) - 1), MIB(ram_size),
		MIB(start + bz->init_size + initrd_size + 2 * (1 << 20) - 1));
}

int kvm_bzimage__zero_page(struct boot_params *bp, const struct kvm_bzimage *bz,
			   const struct kvm_linux_boot *lb)
{
	int n;

	if (lb->cmdline_len > bz->cmdline_size)
		return kemari_err(
			-E2BIG,
			"kernel command line is %zu bytes but this kernel takes at most %u: shorten --append",
			lb->cmdline_len, bz->cmdline_size);
	/* A clean page: the kernel trusts every field it finds non-zero. */
	memset(bp, 0, sizeof(*bp));
	memcpy(&bp->hdr, &bz->hdr, bz->hdr_len);
	bp->hdr.type_of_loader = KVM_BZIMAGE_LOADER_UNDEF;
	/*
	 * KEEP_SEGMENTS is obsolete and only ever concerned the 32-bit
	 * entry; QUIET_FLAG would hide the early decompressor messages.
	 */
	bp->hdr.loadflags = LOADED_HIGH | CAN_USE_HEAP;
	bp->hdr.heap_end_ptr = BZ_HEAP_END_PTR;
	bp->hdr.cmd_line_ptr = (uint32_t)lb->cmdline_gpa;
	bp->ext_cmd_line_ptr = (uint32_t)(lb->cmdline_gpa >> 32);
	bp->hdr.ramdisk_image = (uint32_t)lb->initrd_gpa;
	bp->ext_ramdisk_image = (uint32_t)(lb->initrd_gpa >> 32);
	bp->hdr.ramdisk_size = (uint32_t)lb->initrd_size;
	bp->ext_ramdisk_size = (uint32_t)(lb->initrd_size >> 32);
	n = kvm_e820__build(lb->ram_size, bp->e820_table,
			    E820_MAX_ENTRIES_ZEROPAGE);
	if (n < 0)
		return n;
	bp->e820_entries = (uint8_t)n;
	return 0;
}
