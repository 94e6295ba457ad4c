// SPDX-License-Identifier: MIT
/*
 * MC146818 RTC and CMOS RAM. The time registers are computed on each read
 * from host time + offset; a write to one of them moves the offset so the
 * guest then reads what it wrote, ticking on from there. While register B's
 * SET bit is 1 the guest's time stands still (set_time) so that it can write
 * the fields one by one, and clearing SET starts the clock from them, as on
 * the chip.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "kemari/buf.h"
#include "rtc.h"

_Static_assert(sizeof(struct kvm_rtc_state) == KVM_RTC_CMOS_SIZE + 24,
	       "kvm_rtc_state must stay free of padding");

#define RTC_NS 1000000000ULL
/* UIP rises this long before the update of the time registers. */
#define RTC_UIP_NS 244000ULL
#define RTC_DIV_MASK 0x70
#define RTC_DIV_NORMAL 0x20 /* 32.768 kHz time base, divider running */
#define RTC_HOUR_PM 0x80
/*
 * The registers set guest time within years 0-16599 (offset and set_time
 * within 2^39 s of the epoch); a restored state beyond 2^40 s is no RTC's,
 * and would overflow the arithmetic on it.
 */
#define RTC_TIME_MAX (1LL << 40)

static uint64_t rtc__host_ns(const struct kvm_rtc *rtc)
{
	struct timespec ts;

	if (rtc->clock)
		return rtc->clock(rtc->clock_ctx);
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * RTC_NS + (uint64_t)ts.tv_nsec;
}

static bool rtc__setting(const struct kvm_rtc_state *st)
{
	return st->cmos[KVM_RTC_REG_B] & KVM_RTC_B_SET;
}

/* The guest's time in seconds since the epoch. */
static int64_t rtc__now(const struct kvm_rtc *rtc)
{
	if (rtc__setting(&rtc->st))
		return rtc->st.set_time;
	return (int64_t)(rtc__host_ns(rtc) / RTC_NS) + rtc->st.offset;
}

static bool rtc__binary(const struct kvm_rtc_state *st)
{
	return st->cmos[KVM_RTC_REG_B] & KVM_RTC_B_DM_BINARY;
}

static uint8_t rtc__enc(const struct kvm_rtc_state *st, int v)
{
	if (v < 0) /* a year before 0: no register holds it */
		v = 0;
	if (rtc__binary(st))
		return (uint8_t)v;
	return (uint8_t)(((v / 10) << 4) | (v % 10));
}

static int rtc__dec(const struct kvm_rtc_state *st, uint8_t v)
{
	if (rtc__binary(st))
		return v;
	return (v >> 4) * 10 + (v & 0x0f);
}

static uint8_t rtc__enc_hour(const struct kvm_rtc_state *st, int h)
{
	int h12;

	if (st->cmos[KVM_RTC_REG_B] & KVM_RTC_B_24H)
		return rtc__enc(st, h);
	h12 = h % 12 ? h % 12 : 12;
	return rtc__enc(st, h12) | (h >= 12 ? RTC_HOUR_PM : 0);
}

static int rtc__dec_hour(const struct kvm_rtc_state *st, uint8_t v)
{
	int h;

	if (st->cmos[KVM_RTC_REG_B] & KVM_RTC_B_24H)
		return rtc__dec(st, v);
	h = rtc__dec(st, v & (uint8_t)~RTC_HOUR_PM) % 12;
	return (v & RTC_HOUR_PM) ? h + 12 : h;
}

static bool rtc__is_time_reg(uint8_t idx)
{
	switch (idx) {
	case KVM_RTC_SECONDS:
	case KVM_RTC_MINUTES:
	case KVM_RTC_HOURS:
	case KVM_RTC_WDAY:
	case KVM_RTC_MDAY:
	case KVM_RTC_MONTH:
	case KVM_RTC_YEAR:
	case KVM_RTC_CENTURY:
		return true;
	}
	return false;
}

static uint8_t rtc__read_time(const struct kvm_rtc *rtc, uint8_t idx)
{
	const struct kvm_rtc_state *st = &rtc->st;
	time_t t = (time_t)rtc__now(rtc);
	struct tm tm;

	if (!gmtime_r(&t, &tm))
		return 0;
	switch (idx) {
	case KVM_RTC_SECONDS:
		return rtc__enc(st, tm.tm_sec);
	case KVM_RTC_MINUTES:
		return rtc__enc(st, tm.tm_min);
	case KVM_RTC_HOURS:
		return rtc__enc_hour(st, tm.tm_hour);
	case KVM_RTC_WDAY:
		return rtc__enc(st, tm.tm_wday + 1);
	case KVM_RTC_MDAY:
		return rtc__enc(st, tm.tm_mday);
	case KVM_RTC_MONTH:
		return rtc__enc(st, tm.tm_mon + 1);
	case KVM_RTC_YEAR:
		return rtc__enc(st, (tm.tm_year + 1900) % 100);
	default: /* KVM_RTC_CENTURY */
		return rtc__enc(st, (tm.tm_year + 1900) / 100);
	}
}

/* The guest sets one field: the other fields keep their current values. */
static void rtc__write_time(struct kvm_rtc *rtc, uint8_t idx, uint8_t val)
{
	struct kvm_rtc_state *st = &rtc->st;
	time_t t = (time_t)rtc__now(rtc);
	int v = rtc__dec(st, val);
	struct tm tm;
	time_t nt;

	if (!gmtime_r(&t, &tm))
		return;
	switch (idx) {
	case KVM_RTC_SECONDS:
		tm.tm_sec = v;
		break;
	case KVM_RTC_MINUTES:
		tm.tm_min = v;
		break;
	case KVM_RTC_HOURS:
		tm.tm_hour = rtc__dec_hour(st, val);
		break;
	case KVM_RTC_WDAY: /* derived from the date; not stored */
		return;
	case KVM_RTC_MDAY:
		tm.tm_mday = v;
		break;
	case KVM_RTC_MONTH:
		tm.tm_mon = v - 1;
		break;
	case KVM_RTC_YEAR:
		tm.tm_year = (tm.tm_year + 1900) / 100 * 100 + v - 1900;
		break;
	default: /* KVM_RTC_CENTURY */
		tm.tm_year = v * 100 + (tm.tm_year + 1900) % 100 - 1900;
		break;
	}
	nt = timegm(&tm);
	if (nt == (time_t)-1)
		return;
	if (rtc__setting(st))
		st->set_time = nt;
	else
		st->offset += (int64_t)nt - (int64_t)t;
}

static uint8_t rtc__read_a(const struct kvm_rtc *rtc)
{
	const struct kvm_rtc_state *st = &rtc->st;
	uint8_t a = st->cmos[KVM_RTC_REG_A] & (uint8_t)~KVM_RTC_A_UIP;

	if ((a & RTC_DIV_MASK) == RTC_DIV_NORMAL && !rtc__setting(st) &&
	    rtc__host_ns(rtc) % RTC_NS >= RTC_NS - RTC_UIP_NS)
		a |= KVM_RTC_A_UIP;
	return a;
}

static void rtc__write_b(struct kvm_rtc *rtc, uint8_t val)
{
	struct kvm_rtc_state *st = &rtc->st;
	bool was = rtc__setting(st), set = val & KVM_RTC_B_SET;
	int64_t host = (int64_t)(rtc__host_ns(rtc) / RTC_NS);

	if (set && !was)
		st->set_time = host + st->offset;
	else if (!set && was)
		st->offset = st->set_time - host;
	/* Setting SET clears UIE, as on the chip. */
	if (set)
		val &= (uint8_t)~KVM_RTC_B_UIE;
	st->cmos[KVM_RTC_REG_B] = val;
}

static uint8_t rtc__read(struct kvm_rtc *rtc)
{
	struct kvm_rtc_state *st = &rtc->st;
	uint8_t idx = st->index;

	if (rtc__is_time_reg(idx))
		return rtc__read_time(rtc, idx);
	switch (idx) {
	case KVM_RTC_REG_A:
		return rtc__read_a(rtc);
	case KVM_RTC_REG_C: /* no interrupt flags: no interrupts */
		return 0;
	case KVM_RTC_REG_D:
		return KVM_RTC_D_VRT;
	}
	return st->cmos[idx];
}

static void rtc__write(struct kvm_rtc *rtc, uint8_t val)
{
	struct kvm_rtc_state *st = &rtc->st;
	uint8_t idx = st->index;

	if (rtc__is_time_reg(idx)) {
		rtc__write_time(rtc, idx, val);
		return;
	}
	switch (idx) {
	case KVM_RTC_REG_A: /* UIP is read-only */
		st->cmos[idx] = val & (uint8_t)~KVM_RTC_A_UIP;
		break;
	case KVM_RTC_REG_B:
		rtc__write_b(rtc, val);
		break;
	case KVM_RTC_REG_C:
	case KVM_RTC_REG_D: /* read-only */
		break;
	default:
		st->cmos[idx] = val;
		break;
	}
}

static int rtc__pio_in(void *dev, uint16_t port, void *data, unsigned int size)
{
	struct kvm_rtc *rtc = dev;
	uint8_t *p = data;

	memset(p, 0xff, size);
	/* The index port is write-only: it reads as an empty bus. */
	if (port == KVM_RTC_BASE + 1)
		p[0] = rtc__read(rtc);
	return 0;
}

static int rtc__pio_out(void *dev, uint16_t port, const void *data,
			unsigned int size)
{
	struct kvm_rtc *rtc = dev;
	uint8_t val = *(const uint8_t *)data;

	(void)size;
	if (port == KVM_RTC_BASE) {
		rtc->st.index = val & 0x7f;
		rtc->st.nmi_masked = val >> 7;
	} else {
		rtc__write(rtc, val);
	}
	return 0;
}

static const struct kvm_pio_ops rtc__ops = {
	.in = rtc__pio_in,
	.out = rtc__pio_out,
};

void kvm_rtc__init(struct kvm_rtc *rtc, kvm_rtc_clock_fn *clock, void *ctx)
{
	memset(rtc, 0, sizeof(*rtc));
	rtc->clock = clock;
	rtc->clock_ctx = ctx;
	rtc->st.cmos[KVM_RTC_REG_A] = KVM_RTC_A_RESET;
	rtc->st.cmos[KVM_RTC_REG_B] = KVM_RTC_B_RESET;
	rtc->st.cmos[KVM_RTC_REG_D] = KVM_RTC_D_VRT;
}

int kvm_rtc__register(struct kvm_rtc *rtc, struct kvm_pio_bus *bus)
{
	return kvm_pio__register(bus, KVM_RTC_BASE, KVM_RTC_PORTS, &rtc__ops,
				 rtc);
}

static void rtc__put16(uint8_t *cmos, unsigned int at, uint64_t v)
{
	if (v > 0xffff)
		v = 0xffff;
	cmos[at] = (uint8_t)v;
	cmos[at + 1] = (uint8_t)(v >> 8);
}

void kvm_rtc__set_ram_size(struct kvm_rtc *rtc, uint64_t ram_size)
{
	const uint64_t mib = 1ULL << 20, hole = 3ULL << 30;
	uint64_t below = ram_size < hole ? ram_size : hole;
	uint64_t above = ram_size - below;
	uint8_t *cmos = rtc->st.cmos;
	uint64_t ext_kib = below > mib ? (below - mib) >> 10 : 0;
	uint64_t ext16 = below > 16 * mib ? (below - 16 * mib) >> 16 : 0;
	uint64_t high = above >> 16;

	rtc__put16(cmos, 0x15, 640);
	rtc__put16(cmos, 0x17, ext_kib);
	rtc__put16(cmos, 0x30, ext_kib);
	rtc__put16(cmos, 0x34, ext16);
	cmos[0x5b] = (uint8_t)high;
	cmos[0x5c] = (uint8_t)(high >> 8);
	cmos[0x5d] = (uint8_t)(high >> 16);
}

int kvm_rtc__save(const struct kvm_rtc *rtc, struct kemari_buf *out)
{
	return kemari_buf__append(out, &rtc->st, sizeof(rtc->st));
}

int kvm_rtc__load(struct kvm_rtc *rtc, const void *blob, size_t len)
{
	struct kvm_rtc_state st;

	if (len != sizeof(st))
		return -EINVAL;
	memcpy(&st, blob, sizeof(st));
	if (st.index >= KVM_RTC_CMOS_SIZE || st.nmi_masked > 1 ||
	    st.offset > RTC_TIME_MAX || st.offset < -RTC_TIME_MAX ||
	    st.set_time > RTC_TIME_MAX || st.set_time < -RTC_TIME_MAX)
		return -EINVAL;
	rtc->st = st;
	return 0;
}
