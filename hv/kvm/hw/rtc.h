/* SPDX-License-Identifier: MIT */
/*
 * MC146818 CMOS RTC at 0x70 (index, bit 7 masks NMI) and 0x71 (data).
 *
 * The time registers show the host's clock (UTC) plus an offset the guest
 * sets by writing them, in BCD or binary and 12 or 24 hour mode as register
 * B says; the century is CMOS byte 0x32. Register A's UIP bit is set during
 * the last 244 us of each second, as on the chip, so Linux's
 * mc146818_avoid_UIP() waits at most that long. Register D always reports
 * valid RAM and time. No interrupt is ever raised (register C reads 0):
 * Linux keeps time with kvmclock and does not need IRQ 8.
 */
#ifndef KEMARI_HV_KVM_HW_RTC_H
#define KEMARI_HV_KVM_HW_RTC_H

#include <stddef.h>
#include <stdint.h>

#include "hw.h"

struct kemari_buf;

#define KVM_RTC_BASE 0x70
#define KVM_RTC_PORTS 2
#define KVM_RTC_IRQ 8 /* never raised */
#define KVM_RTC_CMOS_SIZE 128

#define KVM_RTC_SECONDS 0x00
#define KVM_RTC_MINUTES 0x02
#define KVM_RTC_HOURS 0x04
#define KVM_RTC_WDAY 0x06
#define KVM_RTC_MDAY 0x07
#define KVM_RTC_MONTH 0x08
#define KVM_RTC_YEAR 0x09
#define KVM_RTC_REG_A 0x0a
#define KVM_RTC_REG_B 0x0b
#define KVM_RTC_REG_C 0x0c
#define KVM_RTC_REG_D 0x0d
#define KVM_RTC_CENTURY 0x32

#define KVM_RTC_A_UIP 0x80
#define KVM_RTC_B_SET 0x80
#define KVM_RTC_B_UIE 0x10
#define KVM_RTC_B_DM_BINARY 0x04
#define KVM_RTC_B_24H 0x02
#define KVM_RTC_D_VRT 0x80
/* Power-on values as a BIOS leaves them: 32.768 kHz base, 1024 Hz rate;
 * BCD, 24 hour mode (Linux's rtc-cmos refuses 12 hour mode). */
#define KVM_RTC_A_RESET 0x26
#define KVM_RTC_B_RESET KVM_RTC_B_24H

/* Host wall clock, nanoseconds since the Unix epoch (UTC). */
typedef uint64_t kvm_rtc_clock_fn(void *ctx);

/*
 * Everything the guest can observe, as plain data (saved byte for byte by
 * kvm_rtc__save()). The time itself is not stored: it is host time plus
 * offset, so a replica on another host keeps the guest's notion of time
 * (both hosts' clocks being NTP-synchronised).
 */
struct kvm_rtc_state {
	uint8_t cmos[KVM_RTC_CMOS_SIZE]; /* RAM; time bytes there unused */
	uint8_t index;			 /* selected byte, 0-127 */
	uint8_t nmi_masked;		 /* bit 7 of the last index write */
	uint8_t pad[6];
	int64_t offset;	  /* guest time minus host time, seconds */
	int64_t set_time; /* guest time frozen while B.SET is 1 */
};

struct kvm_rtc {
	struct kvm_rtc_state st; /* the whole guest-visible state */
	kvm_rtc_clock_fn *clock;
	void *clock_ctx;
};

/*
 * Power-on state (A 0x26, B 0x02, D 0x80, RAM zero, offset 0); clock NULL
 * means clock_gettime(CLOCK_REALTIME). Does not register ports.
 */
void kvm_rtc__init(struct kvm_rtc *rtc, kvm_rtc_clock_fn *clock, void *ctx);
/* Claim ports 0x70-0x71: 0 or kvm_pio__register()'s error. */
int kvm_rtc__register(struct kvm_rtc *rtc, struct kvm_pio_bus *bus);
/*
 * Fill the memory size bytes as PC firmware (and QEMU) does, for guests
 * that read them: 0x15/0x16 base memory in KiB (640), 0x17/0x18 and
 * 0x30/0x31 KiB above 1 MiB, 0x34/0x35 64 KiB units above 16 MiB (both
 * below the PCI hole, capped at 0xffff), 0x5b-0x5d 64 KiB units above
 * 4 GiB. ram_size is split around the hole as hv/kvm/linux_boot.h lays it.
 */
void kvm_rtc__set_ram_size(struct kvm_rtc *rtc, uint64_t ram_size);
/* Whether the guest last wrote the index port with bit 7 set. */
static inline bool kvm_rtc__nmi_masked(const struct kvm_rtc *rtc)
{
	return rtc->st.nmi_masked;
}

/* Append st: 0 or -ENOMEM. */
int kvm_rtc__save(const struct kvm_rtc *rtc, struct kemari_buf *out);
/* Replace st; -EINVAL for a blob of the wrong size or a bad index. */
int kvm_rtc__load(struct kvm_rtc *rtc, const void *blob, size_t len);

#endif
