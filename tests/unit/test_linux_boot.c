// SPDX-License-Identifier: MIT
/*
 * Linux boot protocol building blocks (hv/kvm/boot/linux_boot.h): bzImage header
 * checks, kernel and initrd placement, the zero page, the e820 map and its
 * memory slots, and the MP table read back the way Linux's mpparse.c does.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../hv/kvm/boot/linux_boot.h"
#include "kemari/kemari.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)
#define IMG_LEN 8192
#define VMLINUZ "/var/cache/kemari-vm/vmlinuz"

/*
 * A minimal bzImage a 6.1 kernel could have produced: four setup sectors
 * after the boot sector, protocol 2.15, Debian's alignment, pref_address
 * and init_size. The jump at 0x200 declares the header up to 0x268, so
 * kernel_info_offset (2.15, at 0x268) lies outside it.
 */
static void make_image(uint8_t *img, size_t len)
{
	struct setup_header h;

	memset(img, 0, len);
	memset(&h, 0, sizeof(h));
	h.setup_sects = 4;
	h.boot_flag = 0xaa55;
	h.jump = 0x66eb; /* eb 66: header ends at 0x202 + 0x66 = 0x268 */
	h.header = 0x53726448;
	h.version = 0x20f;
	h.loadflags = LOADED_HIGH;
	h.initrd_addr_max = 0x7fffffff;
	h.kernel_alignment = 0x200000;
	h.relocatable_kernel = 1;
	h.xloadflags = XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G;
	h.cmdline_size = 0x7ff;
	h.pref_address = 16 * MiB;
	h.init_size = 0x3f98000;
	h.kernel_info_offset = 0xdeadbeef;
	memcpy(img + KVM_BZIMAGE_HDR_OFF, &h, sizeof(h));
	img[(4 + 1) * 512] = 0x42; /* first byte of the 64-bit kernel */
}

static struct setup_header *hdr_of(uint8_t *img)
{
	return (struct setup_header *)(img + KVM_BZIMAGE_HDR_OFF);
}

static void parse_ok(uint8_t *img, size_t len, struct kvm_bzimage *bz)
{
	kemari_err_clear();
	cr_assert(eq(int, kvm_bzimage__parse(img, len, "k", bz), 0), "%s",
		  kemari_last_error(-ENOEXEC));
}

/* Refused with -ENOEXEC and a one-line message naming the file. */
static void expect_refused(const uint8_t *img, size_t len, const char *why)
{
	struct kvm_bzimage bz;
	const char *msg;

	kemari_err_clear();
	cr_assert(eq(int, kvm_bzimage__parse(img, len, "/tmp/kern", &bz),
		     -ENOEXEC));
	msg = kemari_last_error(-ENOEXEC);
	cr_assert(strstr(msg, "kernel /tmp/kern: ") == msg, "message: %s", msg);
	cr_assert(strstr(msg, why) != NULL, "'%s' lacks '%s'", msg, why);
	cr_assert(strchr(msg, '\n') == NULL);
}

Test(linux_boot, parses_minimal_header)
{
	uint8_t img[IMG_LEN];
	struct kvm_bzimage bz;

	make_image(img, sizeof(img));
	parse_ok(img, sizeof(img), &bz);
	cr_assert(eq(u16, bz.version, 0x20f));
	cr_assert(eq(uint, bz.setup_sects, 4));
	cr_assert(eq(sz, bz.kernel_offset, 5 * 512));
	cr_assert(eq(sz, bz.kernel_size, IMG_LEN - 5 * 512));
	cr_assert(eq(u8, img[bz.kernel_offset], 0x42));
	cr_assert(eq(u32, bz.initrd_addr_max, 0x7fffffff));
	cr_assert(eq(u32, bz.cmdline_size, 0x7ff));
	cr_assert(eq(u64, bz.pref_address, 16 * MiB));
	cr_assert(eq(u32, bz.kernel_alignment, 0x200000));
	cr_assert(eq(u32, bz.init_size, 0x3f98000));
	cr_assert(eq(sz, bz.hdr_len, 0x268 - 0x1f1));
	/* Bytes past the declared header end are not kept. */
	cr_assert(eq(u32, bz.hdr.kernel_info_offset, 0));
	cr_assert(eq(u32, bz.hdr.init_size, 0x3f98000));
}

Test(linux_boot, setup_sects_zero_means_four)
{
	uint8_t img[IMG_LEN];
	struct kvm_bzimage bz;

	make_image(img, sizeof(img));
	hdr_of(img)->setup_sects = 0;
	parse_ok(img, sizeof(img), &bz);
	cr_assert(eq(uint, bz.setup_sects, 4));
	cr_assert(eq(sz, bz.kernel_offset, 5 * 512));

	hdr_of(img)->setup_sects = 9;
	parse_ok(img, sizeof(img), &bz);
	cr_assert(eq(sz, bz.kernel_offset, 10 * 512));
}

Test(linux_boot, refuses_truncated)
{
	uint8_t img[IMG_LEN];

	make_image(img, sizeof(img));
	expect_refused(img, 0, "too small");
	expect_refused(img, 0x1f1, "too small");
	/* Cut inside the setup header. */
	expect_refused(img, 0x260, "too small");
	/* Whole header, but the kernel itself is missing. */
	expect_refused(img, 5 * 512, "truncated bzImage");
	expect_refused(img, 0x300, "truncated bzImage");
}

Test(linux_boot, refuses_wrong_magic)
{
	uint8_t img[IMG_LEN];

	make_image(img, sizeof(img));
	hdr_of(img)->header = 0x53726449;
	expect_refused(img, sizeof(img), "no HdrS magic");
}

Test(linux_boot, refuses_missing_boot_flag)
{
	uint8_t img[IMG_LEN];

	make_image(img, sizeof(img));
	hdr_of(img)->boot_flag = 0;
	expect_refused(img, sizeof(img), "0xAA55");
}

Test(linux_boot, refuses_elf_vmlinux)
{
	uint8_t img[IMG_LEN];

	make_image(img, sizeof(img));
	memcpy(img, "\177ELF", 4);
	expect_refused(img, sizeof(img), "ELF vmlinux");
}

Test(linux_boot, refuses_protocol_2_11)
{
	uint8_t img[IMG_LEN];
	struct kvm_bzimage bz;

	make_image(img, sizeof(img));
	hdr_of(img)->version = 0x20b;
	expect_refused(img, sizeof(img), "2.11 is older than 2.12");
	hdr_of(img)->version = 0x20c;
	parse_ok(img, sizeof(img), &bz);
}

Test(linux_boot, refuses_not_relocatable)
{
	uint8_t img[IMG_LEN];

	make_image(img, sizeof(img));
	hdr_of(img)->relocatable_kernel = 0;
	expect_refused(img, sizeof(img), "not relocatable");
}

Test(linux_boot, refuses_no_64bit_entry)
{
	uint8_t img[IMG_LEN];

	make_image(img, sizeof(img));
	hdr_of(img)->xloadflags = XLF_CAN_BE_LOADED_ABOVE_4G;
	expect_refused(img, sizeof(img), "XLF_KERNEL_64");
}

Test(linux_boot, refuses_setup_sects_beyond_file)
{
	uint8_t img[IMG_LEN];

	make_image(img, sizeof(img));
	hdr_of(img)->setup_sects = 200; /* kernel at 100.5 KiB of 8 KiB */
	expect_refused(img, sizeof(img), "setup_sects 200");
	hdr_of(img)->setup_sects = IMG_LEN / 512 - 1; /* exactly at the end */
	expect_refused(img, sizeof(img), "truncated bzImage");
}

Test(linux_boot, refuses_short_header_and_bad_alignment)
{
	uint8_t img[IMG_LEN];

	make_image(img, sizeof(img));
	hdr_of(img)->jump = 0x40eb; /* header would end at 0x242 */
	expect_refused(img, sizeof(img), "before init_size");
	make_image(img, sizeof(img));
	hdr_of(img)->jump = 0x66e9; /* not a short jump */
	expect_refused(img, sizeof(img), "corrupt bzImage");
	make_image(img, sizeof(img));
	hdr_of(img)->kernel_alignment = 0x300000;
	expect_refused(img, sizeof(img), "kernel_alignment");
	make_image(img, sizeof(img));
	hdr_of(img)->init_size = 0;
	expect_refused(img, sizeof(img), "init_size");
}

Test(linux_boot, debian_vmlinuz_if_cached)
{
	struct kvm_bzimage bz;
	uint8_t *img;
	FILE *f = fopen(VMLINUZ, "rb");
	long len;

	if (!f)
		cr_skip_test(VMLINUZ " not cached (tests/vm/vm.sh fetches it)");
	cr_assert(eq(int, fseek(f, 0, SEEK_END), 0));
	len = ftell(f);
	rewind(f);
	cr_assert(gt(long, len, 0));
	img = malloc((size_t)len);
	cr_assert(not(eq(ptr, img, NULL)));
	cr_assert(eq(sz, fread(img, 1, (size_t)len, f), (size_t)len));
	fclose(f);

	parse_ok(img, (size_t)len, &bz);
	cr_assert(ge(u16, bz.version, 0x20f));
	cr_assert(ne(u16, bz.xloadflags & XLF_KERNEL_64, 0));
	cr_assert(eq(sz, bz.kernel_offset, (bz.setup_sects + 1) * 512));
	cr_assert(gt(sz, bz.kernel_size, 1024 * 1024));
	cr_assert(ge(u32, bz.cmdline_size, 255));
	cr_assert(ge(u64, kvm_bzimage__load_addr(&bz), MiB));
	cr_assert(
		eq(u64, kvm_bzimage__load_addr(&bz) % bz.kernel_alignment, 0));
	free(img);
}

Test(linux_boot, load_address)
{
	uint8_t img[IMG_LEN];
	struct kvm_bzimage bz;

	make_image(img, sizeof(img));
	parse_ok(img, sizeof(img), &bz);
	cr_assert(eq(u64, kvm_bzimage__load_addr(&bz), 16 * MiB));
	bz.pref_address = 17 * MiB; /* rounded up to the 2 MiB alignment */
	cr_assert(eq(u64, kvm_bzimage__load_addr(&bz), 18 * MiB));
	bz.pref_address = 0; /* no preference: 16 MiB */
	cr_assert(eq(u64, kvm_bzimage__load_addr(&bz), 16 * MiB));
	bz.pref_address = 0x1000;
	cr_assert(eq(u64, kvm_bzimage__load_addr(&bz), 16 * MiB));
	bz.pref_address = 8 * GiB; /* beyond the low RAM */
	cr_assert(eq(u64, kvm_bzimage__load_addr(&bz), 16 * MiB));
	bz.pref_address = MiB;
	bz.kernel_alignment = 0x1000000;
	cr_assert(eq(u64, kvm_bzimage__load_addr(&bz), 16 * MiB));
}

/* ---- e820 and slots ---------------------------------------------------- */

static void check_e820(const struct boot_e820_entry *e, uint64_t start,
		       uint64_t end, uint32_t type)
{
	cr_assert(eq(u64, e->addr, start));
	cr_assert(eq(u64, e->size, end - start));
	cr_assert(eq(u32, e->type, type));
}

static void check_low_e820(const struct boot_e820_entry *tab)
{
	check_e820(&tab[0], 0, 0x9fc00, KVM_E820_RAM);
	check_e820(&tab[1], 0x9fc00, 0xa0000, KVM_E820_RESERVED);
	check_e820(&tab[2], 0xf0000, 0x100000, KVM_E820_RESERVED);
}

Test(linux_boot, e820_64m)
{
	struct boot_e820_entry tab[8];

	cr_assert(eq(int, kvm_e820__build(64 * MiB, tab, 8), 4));
	check_low_e820(tab);
	check_e820(&tab[3], MiB, 64 * MiB, KVM_E820_RAM);
}

Test(linux_boot, e820_3g)
{
	struct boot_e820_entry tab[8];

	cr_assert(eq(int, kvm_e820__build(3 * GiB, tab, 8), 4));
	check_low_e820(tab);
	check_e820(&tab[3], MiB, 3 * GiB, KVM_E820_RAM);
}

Test(linux_boot, e820_4g)
{
	struct boot_e820_entry tab[8];

	cr_assert(eq(int, kvm_e820__build(4 * GiB, tab, 8), 5));
	check_low_e820(tab);
	check_e820(&tab[3], MiB, 3 * GiB, KVM_E820_RAM);
	check_e820(&tab[4], 4 * GiB, 5 * GiB, KVM_E820_RAM);
}

Test(linux_boot, e820_6g)
{
	struct boot_e820_entry tab[8];

	cr_assert(eq(int, kvm_e820__build(6 * GiB, tab, 8), 5));
	check_low_e820(tab);
	check_e820(&tab[3], MiB, 3 * GiB, KVM_E820_RAM);
	check_e820(&tab[4], 4 * GiB, 7 * GiB, KVM_E820_RAM);
}

Test(linux_boot, e820_limits)
{
	struct boot_e820_entry tab[8];

	cr_assert(eq(int, kvm_e820__build(64 * MiB, tab, 3), -ENOSPC));
	cr_assert(eq(int, kvm_e820__build(6 * GiB, tab, 4), -ENOSPC));
	kemari_err_clear();
	cr_assert(eq(int, kvm_e820__build(MiB, tab, 8), -EINVAL));
	cr_assert(strstr(kemari_last_error(-EINVAL), "raise --mem") != NULL);
}

Test(linux_boot, slots_match_e820)
{
	struct kvm_e820_slot s[2];

	cr_assert(eq(int, kvm_e820__slots(64 * MiB, s, 2), 1));
	cr_assert(eq(u64, s[0].gpa, 0));
	cr_assert(eq(u64, s[0].size, 64 * MiB));
	cr_assert(eq(u64, s[0].host_off, 0));

	cr_assert(eq(int, kvm_e820__slots(3 * GiB, s, 2), 1));
	cr_assert(eq(u64, s[0].size, 3 * GiB));

	cr_assert(eq(int, kvm_e820__slots(6 * GiB, s, 2), 2));
	cr_assert(eq(u64, s[0].gpa, 0));
	cr_assert(eq(u64, s[0].size, 3 * GiB));
	cr_assert(eq(u64, s[0].host_off, 0));
	cr_assert(eq(u64, s[1].gpa, 4 * GiB));
	cr_assert(eq(u64, s[1].size, 3 * GiB));
	cr_assert(eq(u64, s[1].host_off, 3 * GiB));

	cr_assert(eq(int, kvm_e820__slots(6 * GiB, s, 1), -ENOSPC));
	cr_assert(eq(int, kvm_e820__slots(0, s, 2), -EINVAL));
}

/* ---- initrd placement ---------------------------------------------------- */

static void debian_like(struct kvm_bzimage *bz)
{
	uint8_t img[IMG_LEN];

	make_image(img, sizeof(img));
	parse_ok(img, sizeof(img), bz);
}

Test(linux_boot, initrd_fits_at_top_of_ram)
{
	struct kvm_bzimage bz;
	uint64_t size = 3386504, gpa = 1;
	uint64_t kernel_end = 16 * MiB + 0x3f98000;

	debian_like(&bz);
	cr_assert(eq(int,
		     kvm_bzimage__initrd_addr(&bz, 256 * MiB, 16 * MiB, size,
					      "i", &gpa),
		     0));
	cr_assert(eq(u64, gpa, (256 * MiB - size) & ~0xfffULL));
	cr_assert(eq(u64, gpa % 4096, 0));
	cr_assert(le(u64, gpa + size, 256 * MiB));
	cr_assert(ge(u64, gpa, kernel_end));

	/* Exactly enough: the initrd starts where the kernel ends. */
	cr_assert(eq(int,
		     kvm_bzimage__initrd_addr(&bz, kernel_end + 8 * MiB,
					      16 * MiB, 8 * MiB, "i", &gpa),
		     0));
	cr_assert(eq(u64, gpa, kernel_end));

	cr_assert(eq(int,
		     kvm_bzimage__initrd_addr(&bz, 256 * MiB, 16 * MiB, 0, "i",
					      &gpa),
		     0));
	cr_assert(eq(u64, gpa, 0));
}

Test(linux_boot, initrd_does_not_fit)
{
	struct kvm_bzimage bz;
	uint64_t kernel_end = 16 * MiB + 0x3f98000;
	uint64_t gpa = 1;
	const char *msg;

	debian_like(&bz);
	/* 64 MiB does not even hold the kernel's init_size. */
	kemari_err_clear();
	cr_assert(eq(int,
		     kvm_bzimage__initrd_addr(&bz, 64 * MiB, 16 * MiB, 4 * MiB,
					      "/x/initrd.gz", &gpa),
		     -E2BIG));
	msg = kemari_last_error(-E2BIG);
	cr_assert(strstr(msg, "initrd /x/initrd.gz") != NULL, "%s", msg);
	cr_assert(strstr(msg, "raise --mem") != NULL, "%s", msg);
	cr_assert(eq(u64, gpa, 0));

	/* One page short. */
	kemari_err_clear();
	cr_assert(eq(int,
		     kvm_bzimage__initrd_addr(&bz, kernel_end + 8 * MiB - 4096,
					      16 * MiB, 8 * MiB, "i", &gpa),
		     -E2BIG));
	/* Larger than all of RAM. */
	cr_assert(eq(int,
		     kvm_bzimage__initrd_addr(&bz, 256 * MiB, 16 * MiB,
					      512 * MiB, "i", &gpa),
		     -E2BIG));
}

Test(linux_boot, initrd_respects_initrd_addr_max)
{
	struct kvm_bzimage bz;
	uint64_t size = 10 * MiB + 123, gpa;
	const char *msg;

	debian_like(&bz);
	/* 6 GiB of RAM: the 2 GiB initrd_addr_max binds, not the hole. */
	cr_assert(eq(int,
		     kvm_bzimage__initrd_addr(&bz, 6 * GiB, 16 * MiB, size, "i",
					      &gpa),
		     0));
	cr_assert(eq(u64, gpa, (2 * GiB - size) & ~0xfffULL));
	/* 2.5 GiB of RAM: still the initrd_addr_max. */
	cr_assert(eq(int,
		     kvm_bzimage__initrd_addr(&bz, 2 * GiB + GiB / 2, 16 * MiB,
					      size, "i", &gpa),
		     0));
	cr_assert(le(u64, gpa + size, 2 * GiB));

	/* A lower maximum: the initrd ends at or below it, page aligned. */
	bz.initrd_addr_max = 256 * MiB - 1;
	cr_assert(eq(int,
		     kvm_bzimage__initrd_addr(&bz, GiB, 16 * MiB, size, "i",
					      &gpa),
		     0));
	cr_assert(eq(u64, gpa, (256 * MiB - size) & ~0xfffULL));
	cr_assert(le(u64, gpa + size - 1, bz.initrd_addr_max));

	/* Below the kernel's end: more RAM cannot help, say so. */
	bz.initrd_addr_max = 64 * MiB - 1;
	kemari_err_clear();
	cr_assert(eq(int,
		     kvm_bzimage__initrd_addr(&bz, GiB, 16 * MiB, size, "i",
					      &gpa),
		     -E2BIG));
	msg = kemari_last_error(-E2BIG);
	cr_assert(strstr(msg, "initrd_addr_max") != NULL, "%s", msg);
}

/* ---- zero page ------------------------------------------------------------ */

Test(linux_boot, zero_page_fields)
{
	uint8_t img[IMG_LEN];
	struct kvm_bzimage bz;
	struct boot_params *bp = malloc(sizeof(*bp));
	struct kvm_linux_boot lb = {
		.ram_size = 6 * GiB,
		.cmdline_gpa = 0x100020000ULL,
		.cmdline_len = 40,
		.initrd_gpa = 0x7f000000,
		.initrd_size = 0x100003000ULL,
	};

	cr_assert(not(eq(ptr, bp, NULL)));
	make_image(img, sizeof(img));
	parse_ok(img, sizeof(img), &bz);
	memset(bp, 0xa5, sizeof(*bp)); /* the builder must clear it */
	cr_assert(eq(int, kvm_bzimage__zero_page(bp, &bz, &lb), 0));

	cr_assert(eq(u8, bp->hdr.type_of_loader, 0xff));
	cr_assert(eq(u8, bp->hdr.setup_sects, 4));
	cr_assert(eq(u16, bp->hdr.boot_flag, 0xaa55));
	cr_assert(eq(u32, bp->hdr.header, 0x53726448));
	cr_assert(eq(u16, bp->hdr.version, 0x20f));
	cr_assert(eq(u32, bp->hdr.init_size, 0x3f98000));
	cr_assert(eq(u32, bp->hdr.kernel_info_offset, 0)); /* past 0x268 */
	cr_assert(ne(u8, bp->hdr.loadflags & CAN_USE_HEAP, 0));
	cr_assert(ne(u8, bp->hdr.loadflags & LOADED_HIGH, 0));
	cr_assert(eq(u8, bp->hdr.loadflags & KEEP_SEGMENTS, 0));
	cr_assert(not(eq(u16, bp->hdr.heap_end_ptr, 0)));
	cr_assert(eq(u32, bp->hdr.cmd_line_ptr, 0x00020000));
	cr_assert(eq(u32, bp->ext_cmd_line_ptr, 1));
	cr_assert(eq(u32, bp->hdr.ramdisk_image, 0x7f000000));
	cr_assert(eq(u32, bp->ext_ramdisk_image, 0));
	cr_assert(eq(u32, bp->hdr.ramdisk_size, 0x3000));
	cr_assert(eq(u32, bp->ext_ramdisk_size, 1));
	cr_assert(eq(u8, bp->sentinel, 0));
	cr_assert(eq(u8, bp->_pad4[0], 0));
	cr_assert(eq(u8, bp->e820_entries, 5));
	check_low_e820(bp->e820_table);
	check_e820(&bp->e820_table[4], 4 * GiB, 7 * GiB, KVM_E820_RAM);
	cr_assert(eq(u64, bp->e820_table[5].size, 0));
	free(bp);
}

Test(linux_boot, zero_page_refuses_long_cmdline)
{
	uint8_t img[IMG_LEN];
	struct kvm_bzimage bz;
	struct boot_params bp;
	struct kvm_linux_boot lb = {
		.ram_size = 256 * MiB,
		.cmdline_gpa = 0x20000,
		.cmdline_len = 0x7ff,
	};

	make_image(img, sizeof(img));
	parse_ok(img, sizeof(img), &bz);
	cr_assert(eq(int, kvm_bzimage__zero_page(&bp, &bz, &lb), 0));
	cr_assert(eq(u8, bp.e820_entries, 4));
	cr_assert(eq(u32, bp.hdr.ramdisk_image, 0));
	cr_assert(eq(u32, bp.hdr.ramdisk_size, 0));
	lb.cmdline_len = 0x800;
	kemari_err_clear();
	cr_assert(eq(int, kvm_bzimage__zero_page(&bp, &bz, &lb), -E2BIG));
	cr_assert(strstr(kemari_last_error(-E2BIG), "--append") != NULL);
}

/* ---- MP table ------------------------------------------------------------- */

struct mp_seen {
	unsigned int cpus, buses, ioapics, intsrcs, lintsrcs, entries;
	unsigned int bsp_count;
	int bsp_apicid;
	uint8_t apic_used[256];
	uint8_t ioapic_id;
	int isa_bus, pci_bus;
	int isa_pin[16];    /* IOAPIC pin of each ISA IRQ, -1: none */
	int pci_pin[32][4]; /* IOAPIC pin of each (device, INTx), -1 */
	int lint_type[2];
};

static uint8_t sum8(const uint8_t *p, size_t len)
{
	uint8_t s = 0;

	while (len--)
		s += *p++;
	return s;
}

/*
 * Find the floating pointer as smp_scan_config() does (16-byte steps,
 * length 1, checksum, spec 1 or 4), then check and walk the table as
 * smp_check_mpc() and smp_read_mpc() do. region is guest memory from gpa.
 */
static void mp_walk(const uint8_t *region, size_t len, uint64_t gpa,
		    struct mp_seen *s)
{
	const struct kvm_mpf *mpf = NULL;
	const struct kvm_mpc_table *mpc;
	const uint8_t *p;
	size_t off, count;

	memset(s, 0, sizeof(*s));
	s->bsp_apicid = -1;
	s->isa_bus = s->pci_bus = -1;
	memset(s->isa_pin, 0xff, sizeof(s->isa_pin));
	memset(s->pci_pin, 0xff, sizeof(s->pci_pin));
	memset(s->lint_type, 0xff, sizeof(s->lint_type));
	for (off = 0; off + 16 <= len && off < 0x400; off += 16) {
		const struct kvm_mpf *f = (const void *)(region + off);

		if (!memcmp(f->signature, "_MP_", 4) && f->length == 1 &&
		    !sum8(region + off, 16) && (f->spec == 1 || f->spec == 4)) {
			mpf = f;
			break;
		}
	}
	cr_assert(not(eq(ptr, (void *)mpf, NULL)), "no floating pointer");
	cr_assert(eq(u8, mpf->feature1, 0)); /* a table, not a default */
	cr_assert(ge(u64, mpf->physptr, gpa));
	off = mpf->physptr - gpa;
	cr_assert(le(sz, off + sizeof(*mpc), len));
	mpc = (const void *)(region + off);
	cr_assert(eq(int, memcmp(mpc->signature, "PCMP", 4), 0));
	cr_assert(le(sz, off + mpc->length, len));
	cr_assert(eq(u8, sum8((const uint8_t *)mpc, mpc->length), 0));
	cr_assert(mpc->spec == 1 || mpc->spec == 4);
	cr_assert(eq(u32, mpc->lapic, 0xfee00000));

	count = sizeof(*mpc);
	p = (const uint8_t *)(mpc + 1);
	while (count < mpc->length) {
		size_t sz;

		switch (*p) {
		case KVM_MP_PROCESSOR: {
			const struct kvm_mpc_cpu *c = (const void *)p;

			sz = sizeof(*c);
			s->cpus++;
			cr_assert(ne(u8, c->cpuflag & KVM_MP_CPU_ENABLED, 0));
			cr_assert(not(eq(u8, s->apic_used[c->apicid], 1)),
				  "APIC id %u twice", c->apicid);
			s->apic_used[c->apicid] = 1;
			if (c->cpuflag & KVM_MP_CPU_BSP) {
				s->bsp_count++;
				s->bsp_apicid = c->apicid;
			}
			break;
		}
		case KVM_MP_BUS: {
			const struct kvm_mpc_bus *b = (const void *)p;

			sz = sizeof(*b);
			s->buses++;
			if (!memcmp(b->bustype, "ISA   ", 6))
				s->isa_bus = b->busid;
			else if (!memcmp(b->bustype, "PCI   ", 6))
				s->pci_bus = b->busid;
			else
				cr_fail("unknown bus type");
			break;
		}
		case KVM_MP_IOAPIC: {
			const struct kvm_mpc_ioapic *io = (const void *)p;

			sz = sizeof(*io);
			s->ioapics++;
			cr_assert(ne(u8, io->flags & KVM_MP_APIC_USABLE, 0));
			cr_assert(eq(u32, io->apicaddr, 0xfec00000));
			cr_assert(eq(u8, io->apicver, 0x11));
			cr_assert(not(eq(u8, s->apic_used[io->apicid], 1)),
				  "IOAPIC id %u is a CPU's", io->apicid);
			s->apic_used[io->apicid] = 1;
			s->ioapic_id = io->apicid;
			break;
		}
		case KVM_MP_INTSRC: {
			const struct kvm_mpc_intsrc *i = (const void *)p;

			sz = sizeof(*i);
			s->intsrcs++;
			cr_assert(eq(u8, i->irqtype, KVM_MP_INT));
			cr_assert(eq(u8, i->dstapic, s->ioapic_id));
			cr_assert(lt(u8, i->dstirq, KVM_MP_IOAPIC_PINS));
			if (i->srcbus == s->isa_bus) {
				cr_assert(lt(u8, i->srcbusirq, 16));
				cr_assert(
					eq(int, s->isa_pin[i->srcbusirq], -1));
				s->isa_pin[i->srcbusirq] = i->dstirq;
			} else {
				cr_assert(eq(int, i->srcbus, s->pci_bus));
				cr_assert(eq(u16, i->irqflag,
					     KVM_MP_IRQ_LEVEL_LOW));
				s->pci_pin[i->srcbusirq >> 2][i->srcbusirq & 3] =
					i->dstirq;
			}
			break;
		}
		case KVM_MP_LINTSRC: {
			const struct kvm_mpc_lintsrc *l = (const void *)p;

			sz = sizeof(*l);
			s->lintsrcs++;
			cr_assert(lt(u8, l->destapiclint, 2));
			cr_assert(eq(u8, l->destapic, KVM_MP_APIC_ALL));
			s->lint_type[l->destapiclint] = l->irqtype;
			break;
		}
		default:
			cr_fail("entry type %u at %zu: Linux stops here", *p,
				count);
			return;
		}
		p += sz;
		count += sz;
		s->entries++;
	}
	cr_assert(eq(sz, count, mpc->length));
	cr_assert(eq(u16, mpc->oemcount, s->entries));
}

Test(linux_boot, mptable_reads_back_like_mpparse)
{
	static const struct kvm_mp_pci_irq pci[] = {
		{ .dev = 1, .pin = 1, .ioapic_pin = 16 },
		{ .dev = 2, .pin = 1, .ioapic_pin = 17 },
		{ .dev = 31, .pin = 4, .ioapic_pin = 23 },
	};
	uint8_t region[0x400];
	struct mp_seen s;
	int n;

	memset(region, 0xcc, sizeof(region));
	n = kvm_mptable__build(region, sizeof(region), 0x9fc00, 4, pci, 3);
	cr_assert(gt(int, n, 0), "%d", n);
	cr_assert(eq(sz, (size_t)n, kvm_mptable__size(4, 3)));
	cr_assert(eq(u8, sum8(region, 16), 0));

	mp_walk(region, (size_t)n, 0x9fc00, &s);
	cr_assert(eq(uint, s.cpus, 4));
	cr_assert(eq(uint, s.buses, 2));
	cr_assert(eq(uint, s.ioapics, 1));
	cr_assert(eq(uint, s.intsrcs, 15 + 3));
	cr_assert(eq(uint, s.lintsrcs, 2));
	cr_assert(eq(uint, s.bsp_count, 1));
	cr_assert(eq(int, s.bsp_apicid, 0));
	cr_assert(eq(u8, s.ioapic_id, 4));
	for (unsigned int id = 0; id <= 4; id++)
		cr_assert(eq(u8, s.apic_used[id], 1), "APIC id %u", id);
	cr_assert(eq(int, s.pci_bus, 0));
	cr_assert(eq(int, s.isa_bus, 1));
	cr_assert(eq(int, s.isa_pin[0], 2));
	cr_assert(eq(int, s.isa_pin[2], -1));
	for (int irq = 1; irq < 16; irq++)
		if (irq != 2)
			cr_assert(eq(int, s.isa_pin[irq], irq), "IRQ %d", irq);
	cr_assert(eq(int, s.pci_pin[1][0], 16));
	cr_assert(eq(int, s.pci_pin[2][0], 17));
	cr_assert(eq(int, s.pci_pin[31][3], 23));
	cr_assert(eq(int, s.pci_pin[1][1], -1));
	cr_assert(eq(int, s.lint_type[0], KVM_MP_EXTINT));
	cr_assert(eq(int, s.lint_type[1], KVM_MP_NMI));
}

Test(linux_boot, mptable_checksums_and_corruption)
{
	uint8_t region[0x400];
	const struct kvm_mpf *mpf = (const void *)region;
	const struct kvm_mpc_table *mpc;
	int n = kvm_mptable__build(region, sizeof(region), 0x9fc00, 8, NULL, 0);

	cr_assert(gt(int, n, 0));
	mpc = (const void *)(region + (mpf->physptr - 0x9fc00));
	cr_assert(eq(u8, sum8(region, 16), 0));
	cr_assert(eq(u8, sum8((const uint8_t *)mpc, mpc->length), 0));
	cr_assert(eq(u16, mpc->oemcount, 8 + 2 + 1 + 15 + 2));
	/* The checker can fail: one flipped byte breaks the sum. */
	region[n - 3] ^= 0x10;
	cr_assert(not(eq(u8, sum8((const uint8_t *)mpc, mpc->length), 0)));
	region[3] ^= 0x01;
	cr_assert(not(eq(u8, sum8(region, 16), 0)));
}

Test(linux_boot, mptable_single_cpu_and_max_fit_ebda)
{
	uint8_t region[0x400];
	struct mp_seen s;
	int n = kvm_mptable__build(region, sizeof(region), 0x9fc00, 1, NULL, 0);

	cr_assert(gt(int, n, 0));
	mp_walk(region, (size_t)n, 0x9fc00, &s);
	cr_assert(eq(uint, s.cpus, 1));
	cr_assert(eq(u8, s.ioapic_id, 1));
	cr_assert(eq(uint, s.intsrcs, 15));
	/* 8 vCPUs with 16 PCI routes stay inside the 1 KiB EBDA. */
	cr_assert(le(sz, kvm_mptable__size(8, 16),
		     KVM_E820_EBDA_END - KVM_E820_EBDA_START));
}

Test(linux_boot, mptable_refusals)
{
	uint8_t region[0x400];
	struct kvm_mp_pci_irq bad = { .dev = 1, .pin = 0, .ioapic_pin = 16 };
	size_t need = kvm_mptable__size(2, 0);

	cr_assert(eq(int,
		     kvm_mptable__build(region, need - 1, 0x9fc00, 2, NULL, 0),
		     -ENOSPC));
	cr_assert(eq(int, kvm_mptable__build(region, need, 0x9fc00, 2, NULL, 0),
		     (int)need));
	cr_assert(eq(int,
		     kvm_mptable__build(region, sizeof(region), 0x9fc00, 0,
					NULL, 0),
		     -EINVAL));
	cr_assert(eq(int,
		     kvm_mptable__build(region, sizeof(region), 0x9fc00, 255,
					NULL, 0),
		     -EINVAL));
	cr_assert(eq(int,
		     kvm_mptable__build(region, sizeof(region), 0x9fc08, 2,
					NULL, 0),
		     -EINVAL));
	cr_assert(eq(int,
		     kvm_mptable__build(region, sizeof(region), 0x9fc00, 2,
					&bad, 1),
		     -EINVAL));
	bad.pin = 1;
	bad.ioapic_pin = 24;
	cr_assert(eq(int,
		     kvm_mptable__build(region, sizeof(region), 0x9fc00, 2,
					&bad, 1),
		     -EINVAL));
	bad.ioapic_pin = 16;
	bad.dev = 32;
	cr_assert(eq(int,
		     kvm_mptable__build(region, sizeof(region), 0x9fc00, 2,
					&bad, 1),
		     -EINVAL));
}
