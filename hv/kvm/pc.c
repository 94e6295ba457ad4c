// SPDX-License-Identifier: MIT
/*
 * The PC platform around a Linux guest: the port bus with COM1, the i8042,
 * the CMOS RTC and PCI configuration mechanism #1, and on PCI the legacy
 * virtio-pci disk (--disk) and network card (--net=tap:...). Interrupts go
 * through the in-kernel irqchip (KVM_IRQ_LINE). The kick of a virtio queue
 * that produces output (disk requests, transmitted frames) is the event
 * tap, exactly as the freestanding devices' kicks are: the engine decides
 * when the queue is served. Received frames arrive on an I/O thread that
 * takes the device lock, so never inside a paused epoch. At takeover the
 * same thread announces the guest's MAC on the TAP (hw/announce.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "boot/linux_boot.h"
#include "hw/announce.h"
#include "hw/conlog.h"
#include "hw/i8042.h"
#include "hw/pci.h"
#include "hw/rtc.h"
#include "hw/serial.h"
#include "kemari/buf.h"
#include "kemari/kemari.h"
#include "kvm.h"
#include "virtio/blk.h"
#include "virtio/net.h"

/* Where the firmware we do not have would have put things. */
#define PC_BLK_SLOT 1
#define PC_NET_SLOT 2
#define PC_BLK_GSI 16
#define PC_NET_GSI 17
#define PC_BLK_IO 0xc000
#define PC_NET_IO 0xc100
#define PC_CONSOLE_LINE 1024
/*
 * Frames read and dropped from the TAP at takeover at most: far more than
 * its queue holds (500 by default), so only a flood arriving as fast as
 * we read stops the drain early, and it must not hold the guest.
 */
#define PC_TAP_DRAIN_MAX 4096

struct kvm_pc_tap {
	struct kemari_event ev;
	struct kvm_virtio_pci *vp;
	bool released;
	int err;
};

struct kvm_pc {
	struct kvm_vm *vm;
	struct kvm_pio_bus bus;
	struct kvm_gmem mem;
	struct kvm_irq irq;
	struct kvm_serial serial;
	struct kvm_i8042 i8042;
	struct kvm_rtc rtc;
	struct kvm_pci pci;

	struct kvm_virtio_blk *blk;
	struct kvm_pci_dev blk_dev;
	int disk_fd;
	struct kvm_virtio_net *net;
	struct kvm_pci_dev net_dev;
	struct kvm_tap_cfg tap;
	int tap_fd;

	/* The serial console: prefixed lines on stdout, or a raw log. */
	int console_fd;
	bool console_raw;
	char line[PC_CONSOLE_LINE];
	size_t line_len;

	pthread_t io_thread;
	bool io_running;
	int wake[2]; /* tells the I/O thread to end */

	/*
	 * The takeover announcement: set by kvm_pc__reattach before the I/O
	 * thread starts (a secondary's VM has not run), then the thread's.
	 */
	unsigned int announce_next; /* KVM_ANNOUNCE_ROUNDS: none due */
	uint64_t announce_t0;	    /* ns, at takeover */
	uint32_t announce_ip;	    /* network order, if announce_garp */
	bool announce_garp;

	/* State save/restore */
	struct kemari_buf scratch; /* a model's state, before its record */
	bool irq_quiet; /* loading: lines change in the models only */
};

static struct kvm_pc *pc_of(struct kvm_vm *vm)
{
	return vm->pc_dev;
}

static void pc__mark_dirty(void *ctx, uint64_t gpa, uint64_t len)
{
	kvm_vm__mark_dirty(ctx, gpa, len);
}

static void pc__irq_set(void *ctx, unsigned int gsi, int level)
{
	struct kvm_vm *vm = ctx;

	if (vm->pc_dev->irq_quiet)
		return;
	/* Fails only with a broken irqchip; the guest then sees no IRQ. */
	if (kvm_vm__irq_line(ctx, gsi, level))
		kemari_err_clear();
}

/* Output gone (a closed pipe, a full disk): said once, the guest runs on. */
static void pc__console_write(struct kvm_pc *pc, const void *buf, size_t len)
{
	int err = kvm_conlog__write_all(pc->console_fd, buf, len);

	if (err) {
		pc->console_fd = -1;
		kemari_warn(
			"the guest's serial console: %s; its output is dropped",
			strerror(-err));
	}
}

/* The line so far; end: the guest stopped, so end the line here. */
static void pc__console_flush(struct kvm_pc *pc, bool end)
{
	const char *prefix = pc->vm->cfg.console_prefix;
	char out[PC_CONSOLE_LINE + 64];
	bool nl;
	int n;

	if (!pc->line_len || pc->console_fd < 0)
		return;
	nl = pc->line[pc->line_len - 1] == '\n';
	n = snprintf(out, sizeof(out), "%s%.*s%s", prefix ? prefix : "",
		     (int)pc->line_len, pc->line, end && !nl ? "\n" : "");
	if (n > 0)
		pc__console_write(pc, out,
				  KEMARI_MIN((size_t)n, sizeof(out) - 1));
	pc->line_len = 0;
}

static void pc__console_tx(void *ctx, const uint8_t *buf, size_t len)
{
	struct kvm_pc *pc = ctx;

	if (pc->console_fd < 0)
		return;
	if (pc->console_raw) {
		pc__console_write(pc, buf, len);
		return;
	}
	for (size_t i = 0; i < len; i++) {
		if (buf[i] == '\r')
			continue;
		pc->line[pc->line_len++] = (char)buf[i];
		if (buf[i] == '\n' || pc->line_len == sizeof(pc->line))
			pc__console_flush(pc, false);
	}
}

void kvm_pc__console_end(struct kvm_vm *vm)
{
	struct kvm_pc *pc = pc_of(vm);

	if (pc)
		pc__console_flush(pc, true);
}

/* The guest pulsed the reset line (reboot, or init's reboot -f): its own
 * end, as a poweroff would be. */
static void pc__reset(void *ctx)
{
	struct kvm_pc *pc = ctx;

	kvm_cpu__note_end(pc->vm, "reset the machine (reboot)", 0);
	atomic_store(&pc->vm->exit_status, 0);
	atomic_store(&pc->vm->stop, true);
	kvm_cpu__kick_all(pc->vm);
}

static int pc__release(struct kemari_event *ev)
{
	struct kvm_pc_tap *t = kemari_container_of(ev, struct kvm_pc_tap, ev);

	if (t->released)
		return -EALREADY;
	t->released = true;
	t->err = kvm_virtio_pci__process(t->vp, ev->queue);
	return t->err;
}

/*
 * A queue kick: the disk's requests and the transmit queue are output, so
 * they go through the engine's event hook first; the receive queue's kick
 * only hands back buffers and is served at once.
 */
static int pc__notify(struct kvm_virtio_pci *vp, unsigned int q, void *ctx)
{
	struct kvm_pc *pc = ctx;
	const struct kemari_hv_hooks *h = &pc->vm->cfg.hooks;
	bool is_net = pc->net && vp == kvm_virtio_net__pci(pc->net);
	struct kvm_pc_tap t;
	int err;

	if ((is_net && q != KVM_VIRTIO_NET_TXQ) || !h->event)
		return kvm_virtio_pci__process(vp, q);
	memset(&t, 0, sizeof(t));
	t.ev.kind = is_net ? KEMARI_EV_NET_TX : KEMARI_EV_BLOCK;
	t.ev.dev = is_net ? PC_NET_SLOT : PC_BLK_SLOT;
	t.ev.queue = q;
	t.ev.release = pc__release;
	t.vp = vp;
	err = h->event(h->ctx, &t.ev);
	if (!err && !t.released && !atomic_load(&pc->vm->stop))
		err = kemari_err(
			-EPROTO,
			"internal: event on PCI slot %u was never released",
			t.ev.dev);
	return err ?: t.err;
}

static void pc__bar_moved(struct kvm_pci_dev *d, unsigned int off,
			  unsigned int len)
{
	(void)off;
	(void)len;
	kvm_virtio_pci__set_base(d->priv, (uint16_t)kvm_pci__bar_addr(d, 0));
}

static int pc__plug(struct kvm_pc *pc, struct kvm_pci_dev *d,
		    struct kvm_virtio_pci *vp, uint8_t slot, uint8_t gsi,
		    uint16_t io)
{
	int err;

	memset(d, 0, sizeof(*d));
	kvm_virtio_pci__set_base(vp, io);
	err = kvm_virtio_pci__fill_config(vp, d->cfg, gsi);
	if (err)
		return kemari_err(err, "virtio-pci config: %s", strerror(-err));
	d->slot = slot;
	d->pin = 1;
	d->gsi = gsi;
	d->bar[0] = (struct kvm_pci_bar){
		.size = kvm_virtio_pci__bar_size(vp),
		.addr = io,
		.ops = &kvm_virtio_pci__pio_ops,
		.opaque = vp,
	};
	d->cfg_written = pc__bar_moved;
	d->priv = vp;
	err = kvm_pci__add(&pc->pci, d);
	if (err)
		return kemari_err(err, "PCI slot %u: %s", slot, strerror(-err));
	kvm_virtio_pci__set_irq(vp, &d->intx, d->gsi);
	kvm_virtio_pci__set_notify(vp, pc__notify, pc);
	return 0;
}

static int pc__disk(struct kvm_pc *pc)
{
	const struct kemari_hv_cfg *cfg = &pc->vm->cfg;
	struct kvm_virtio_blk_params p = { .serial = "kemari-disk" };
	uint64_t bytes;
	int err;

	/* A secondary's disk comes at kvm_pc__open_disk, after the
	 * handshake: the device is plugged without it (capacity 0). */
	if (!cfg->defer_disk) {
		err = kvm_disk__open(cfg->disk_path, cfg->disk_size, true,
				     &pc->disk_fd, &bytes);
		if (err)
			return err;
	}
	p.fd = pc->disk_fd;
	err = kvm_virtio_blk__create(&pc->blk, &p, &pc->mem);
	if (err)
		return kemari_err(err, "virtio-blk on %s: %s", cfg->disk_path,
				  strerror(-err));
	return pc__plug(pc, &pc->blk_dev, kvm_virtio_blk__pci(pc->blk),
			PC_BLK_SLOT, PC_BLK_GSI, PC_BLK_IO);
}

int kvm_pc__open_disk(struct kvm_vm *vm)
{
	struct kvm_pc *pc = pc_of(vm);
	uint64_t bytes;
	int fd, err;

	if (!pc || !pc->blk)
		return 0;
	err = kvm_disk__open(vm->cfg.disk_path, 0, false, &fd, &bytes);
	if (err)
		return err;
	err = kvm_virtio_blk__set_fd(pc->blk, fd);
	if (err) {
		close(fd);
		return kemari_err(err, "virtio-blk on %s: %s",
				  vm->cfg.disk_path, strerror(-err));
	}
	if (pc->disk_fd >= 0)
		close(pc->disk_fd);
	pc->disk_fd = fd;
	return 0;
}

static int pc__nic(struct kvm_pc *pc)
{
	struct kvm_virtio_net_params p = { 0 };
	int err;

	err = kvm_tap__parse(pc->vm->cfg.net, &pc->tap);
	err = err ?: kvm_tap__open(&pc->tap, &pc->tap_fd);
	if (err)
		return err;
	p.fd = pc->tap_fd;
	memcpy(p.mac, pc->tap.mac, sizeof(p.mac));
	err = kvm_virtio_net__create(&pc->net, &p, &pc->mem);
	if (err)
		return kemari_err(err, "virtio-net on %s: %s", pc->tap.ifname,
				  strerror(-err));
	return pc__plug(pc, &pc->net_dev, kvm_virtio_net__pci(pc->net),
			PC_NET_SLOT, PC_NET_GSI, PC_NET_IO);
}

static int pc__console(struct kvm_pc *pc)
{
	const char *path = pc->vm->cfg.console_log;

	pc->console_fd = STDOUT_FILENO;
	if (!path)
		return 0;
	pc->console_fd =
		open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (pc->console_fd < 0)
		return kemari_err(-errno, "--console-log=%s: %s", path,
				  strerror(errno));
	pc->console_raw = true;
	return 0;
}

int kvm_pc__create(struct kvm_vm *vm)
{
	const struct kemari_hv_cfg *cfg = &vm->cfg;
	struct kvm_pc *pc = calloc(1, sizeof(*pc));
	int err;

	if (!pc)
		return -ENOMEM;
	vm->pc_dev = pc;
	pc->vm = vm;
	pc->disk_fd = pc->tap_fd = pc->console_fd = -1;
	pc->wake[0] = pc->wake[1] = -1;
	pc->announce_next = KVM_ANNOUNCE_ROUNDS;
	pc->mem = (struct kvm_gmem){ .ram = vm->ram,
				     .ram_size = vm->ram_size,
				     .mark_dirty = pc__mark_dirty,
				     .ctx = vm };
	pc->irq = (struct kvm_irq){ .set = pc__irq_set, .ctx = vm };
	err = pc__console(pc);
	if (err)
		return err;
	kvm_serial__init(&pc->serial, KVM_SERIAL_COM1_BASE, KVM_SERIAL_COM1_IRQ,
			 &pc->irq, pc__console_tx, pc);
	kvm_i8042__init(&pc->i8042, &pc->irq, pc__reset, pc);
	kvm_rtc__init(&pc->rtc, NULL, NULL);
	kvm_rtc__set_ram_size(&pc->rtc, vm->ram_size);
	err = kvm_serial__register(&pc->serial, &pc->bus);
	err = err ?: kvm_i8042__register(&pc->i8042, &pc->bus);
	err = err ?: kvm_rtc__register(&pc->rtc, &pc->bus);
	err = err ?: kvm_pci__init(&pc->pci, &pc->bus, &pc->irq);
	if (err)
		return kemari_err(err, "PC platform ports: %s", strerror(-err));
	/* The TAP first: a refused one must leave no new disk behind. */
	if (cfg->net) {
		err = pc__nic(pc);
		if (err)
			return err;
	}
	if (cfg->disk_path)
		err = pc__disk(pc);
	return err;
}

void kvm_pc__destroy(struct kvm_vm *vm)
{
	struct kvm_pc *pc = pc_of(vm);

	if (!pc)
		return;
	kvm_pc__stop_io(vm);
	pc__console_flush(pc, true);
	if (pc->net)
		kvm_virtio_net__destroy(pc->net);
	if (pc->blk)
		kvm_virtio_blk__destroy(pc->blk);
	if (pc->tap_fd >= 0)
		close(pc->tap_fd);
	if (pc->disk_fd >= 0)
		close(pc->disk_fd);
	if (pc->console_fd > STDERR_FILENO)
		close(pc->console_fd);
	kemari_buf__fini(&pc->scratch);
	free(pc);
	vm->pc_dev = NULL;
}

int kvm_pc__io(struct kvm_vm *vm, uint16_t port, bool in, void *data,
	       unsigned int size)
{
	bool claimed;

	return kvm_pio__io(&pc_of(vm)->bus, port, in, data, size, &claimed);
}

unsigned int kvm_pc__pci_routes(struct kvm_vm *vm, struct kvm_mp_pci_irq *r,
				unsigned int max)
{
	int n = kvm_pci__routes(&pc_of(vm)->pci, r, max);

	return n < 0 ? 0 : (unsigned int)n;
}

/*
 * One announcement round on the TAP. Written beside the guest's own
 * transmissions without the device lock: each write() is one whole frame.
 * A lost round is only logged; the next one, or the guest's own traffic,
 * teaches the bridge as well.
 */
static void pc__announce_round(struct kvm_pc *pc)
{
	uint8_t f[2][KVM_ANNOUNCE_FRAME_LEN];
	size_t len[2];
	unsigned int n = 0;

	len[n++] = kvm_announce__rarp(f[0], sizeof(f[0]), pc->tap.mac);
	if (pc->announce_garp)
		len[n++] = kvm_announce__garp(f[1], sizeof(f[1]), pc->tap.mac,
					      pc->announce_ip);
	for (unsigned int i = 0; i < n; i++)
		if (write(pc->tap_fd, f[i], len[i]) != (ssize_t)len[i]) {
			kemari_warn(
				"takeover: announcement round %u on TAP %s: %s",
				pc->announce_next, pc->tap.ifname,
				strerror(errno));
			break;
		}
	pc->announce_next++;
}

/* Send the rounds now due; the poll timeout until the next, or -1. */
static int pc__announce_due(struct kvm_pc *pc)
{
	while (pc->announce_next < KVM_ANNOUNCE_ROUNDS) {
		uint64_t due =
			pc->announce_t0 +
			kvm_announce__delay_ms(pc->announce_next) * 1000000ULL;
		uint64_t now = kemari_now_ns();

		if (now < due)
			return (int)((due - now + 999999) / 1000000);
		pc__announce_round(pc);
	}
	return -1;
}

/*
 * Received frames, while the guest runs: device lock held for each batch.
 * The poll timeout drives the takeover announcement's later rounds.
 */
static void *pc__io_main(void *arg)
{
	struct kvm_pc *pc = arg;
	struct pollfd pfd[2] = {
		{ .fd = pc->wake[0], .events = POLLIN },
		{ .fd = pc->tap_fd, .events = POLLIN },
	};

	for (;;) {
		int n = poll(pfd, pc->net ? 2 : 1, pc__announce_due(pc));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || pfd[0].revents)
			break;
		if (!(pfd[1].revents & POLLIN))
			continue;
		pthread_mutex_lock(&pc->vm->lock);
		while (kvm_virtio_net__rx(pc->net) > 0)
			;
		pthread_mutex_unlock(&pc->vm->lock);
	}
	return NULL;
}

int kvm_pc__start_io(struct kvm_vm *vm)
{
	struct kvm_pc *pc = pc_of(vm);
	int err;

	if (!pc || pc->io_running)
		return 0;
	if (pipe2(pc->wake, O_CLOEXEC) < 0)
		return kemari_err(-errno, "pipe: %s", strerror(errno));
	err = -pthread_create(&pc->io_thread, NULL, pc__io_main, pc);
	if (err)
		return kemari_err(err, "cannot start the device I/O thread");
	pc->io_running = true;
	return 0;
}

void kvm_pc__stop_io(struct kvm_vm *vm)
{
	struct kvm_pc *pc = pc_of(vm);

	if (!pc || !pc->io_running)
		return;
	if (write(pc->wake[1], "x", 1) < 0)
		kemari_warn("cannot wake the device I/O thread");
	pthread_join(pc->io_thread, NULL);
	pc->io_running = false;
	close(pc->wake[0]);
	close(pc->wake[1]);
	pc->wake[0] = pc->wake[1] = -1;
}

/* --- state save / restore ------------------------------------------------ */

/*
 * The dev blob: TLV records, version-tagged by the first. The models'
 * own save functions give plain data; each virtio-pci device's record
 * names its PCI slot.
 */
enum {
	PC_DEV_HDR = 0x100,
	PC_DEV_SERIAL,
	PC_DEV_I8042,
	PC_DEV_RTC,
	PC_DEV_PCI,
	PC_DEV_VIRTIO,
};

#define PC_DEV_MAGIC 0x4456504bU /* "KPVD" */
#define PC_DEV_VERSION 1
#define PC_NVIRTIO 2

struct pc_dev_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t nvirtio;
};

struct pc_virtio_rec {
	uint8_t slot;
	uint8_t pad[7];
	struct kvm_virtio_pci_state st;
};

/* The virtio-pci devices present, by PCI slot. */
static unsigned int pc__virtio(struct kvm_pc *pc, struct kvm_virtio_pci **vp,
			       uint8_t *slot)
{
	unsigned int n = 0;

	if (pc->blk) {
		vp[n] = kvm_virtio_blk__pci(pc->blk);
		slot[n++] = pc->blk_dev.slot;
	}
	if (pc->net) {
		vp[n] = kvm_virtio_net__pci(pc->net);
		slot[n++] = pc->net_dev.slot;
	}
	return n;
}

static int pc__put_model(struct kvm_pc *pc, struct kemari_buf *out,
			 uint32_t tag, int err)
{
	return err
		       ?: kemari_tlv__put(out, tag, pc->scratch.data,
					  (uint32_t)pc->scratch.len);
}

int kvm_pc__save(struct kvm_vm *vm, struct kemari_buf *out)
{
	struct kvm_pc *pc = pc_of(vm);
	struct kvm_virtio_pci *vp[PC_NVIRTIO];
	uint8_t slot[PC_NVIRTIO];
	unsigned int n = pc__virtio(pc, vp, slot);
	struct pc_dev_hdr hdr = { .magic = PC_DEV_MAGIC,
				  .version = PC_DEV_VERSION,
				  .nvirtio = (uint16_t)n };
	struct pc_virtio_rec rec;
	struct kemari_buf *b = &pc->scratch;
	int err = kemari_tlv__put(out, PC_DEV_HDR, &hdr, sizeof(hdr));

	kemari_buf__reset(b);
	err = pc__put_model(pc, out, PC_DEV_SERIAL,
			    err ?: kvm_serial__save(&pc->serial, b));
	kemari_buf__reset(b);
	err = pc__put_model(pc, out, PC_DEV_I8042,
			    err ?: kvm_i8042__save(&pc->i8042, b));
	kemari_buf__reset(b);
	err = pc__put_model(pc, out, PC_DEV_RTC,
			    err ?: kvm_rtc__save(&pc->rtc, b));
	kemari_buf__reset(b);
	err = pc__put_model(pc, out, PC_DEV_PCI,
			    err ?: kvm_pci__save(&pc->pci, b));
	for (unsigned int i = 0; i < n && !err; i++) {
		memset(&rec, 0, sizeof(rec));
		rec.slot = slot[i];
		kvm_virtio_pci__save(vp[i], &rec.st);
		err = kemari_tlv__put(out, PC_DEV_VIRTIO, &rec, sizeof(rec));
	}
	return err;
}

struct pc_dev_parsed {
	const void *model[PC_DEV_VIRTIO - PC_DEV_SERIAL];
	uint32_t len[PC_DEV_VIRTIO - PC_DEV_SERIAL];
	struct pc_virtio_rec virtio[PC_NVIRTIO];
	bool have_virtio[PC_NVIRTIO];
};

static int pc__parse(struct kvm_pc *pc, const void *blob, size_t len,
		     struct pc_dev_parsed *p)
{
	struct kvm_virtio_pci *vp[PC_NVIRTIO];
	uint8_t slot[PC_NVIRTIO];
	unsigned int n = pc__virtio(pc, vp, slot), nvirtio = 0;
	struct kemari_tlv_iter it = { blob, len };
	struct pc_virtio_rec rec;
	struct pc_dev_hdr hdr;
	bool have_hdr = false;
	const void *val;
	uint32_t tag, sz;
	int r;

	memset(p, 0, sizeof(*p));
	while ((r = kemari_tlv__next(&it, &tag, &val, &sz)) > 0) {
		if (tag == PC_DEV_HDR && sz == sizeof(hdr)) {
			memcpy(&hdr, val, sizeof(hdr));
			if (hdr.magic != PC_DEV_MAGIC ||
			    hdr.version != PC_DEV_VERSION)
				return kemari_err(
					-EINVAL,
					"device state version %u, this kemari-run reads %u: run the same build on both sides",
					hdr.version, PC_DEV_VERSION);
			have_hdr = true;
		} else if (!have_hdr) {
			return kemari_err(
				-EBADMSG,
				"device state is not a PC platform's (both sides must run a Linux guest on the same kemari-run)");
		} else if (tag >= PC_DEV_SERIAL && tag < PC_DEV_VIRTIO) {
			p->model[tag - PC_DEV_SERIAL] = val;
			p->len[tag - PC_DEV_SERIAL] = sz;
		} else if (tag == PC_DEV_VIRTIO && sz == sizeof(rec)) {
			unsigned int i = 0;

			memcpy(&rec, val, sizeof(rec));
			while (i < n && slot[i] != rec.slot)
				i++;
			if (i == n || p->have_virtio[i])
				return kemari_err(
					-EINVAL,
					"device state: a virtio device in PCI slot %u that this VM does not have: start both sides with the same --disk/--net",
					rec.slot);
			p->virtio[i] = rec;
			p->have_virtio[i] = true;
			nvirtio++;
		} else {
			return kemari_err(-EBADMSG,
					  "device state: unknown record 0x%x",
					  tag);
		}
	}
	if (r < 0)
		return kemari_err(r, "device state blob is malformed");
	if (!have_hdr || nvirtio != n || hdr.nvirtio != n)
		return kemari_err(
			-EINVAL,
			"device state has %u virtio devices but this VM %u: start both sides with the same --disk/--net",
			have_hdr ? hdr.nvirtio : 0, n);
	for (unsigned int i = 0; i < KEMARI_ARRAY_SIZE(p->model); i++)
		if (!p->model[i])
			return kemari_err(-EBADMSG,
					  "device state: record 0x%x missing",
					  PC_DEV_SERIAL + i);
	return 0;
}

/*
 * The models' loads drive their interrupt lines to the restored levels;
 * here those calls stay in the models (irq_quiet): the PICs and IOAPIC,
 * restored before (kvm_vm__set_state), already hold every pin's level,
 * latched edge and pending bit as saved, and a line driven again after
 * them would re-deliver an edge the guest has already taken. KVM's own
 * record of the line is then low for a line the model holds high; the
 * model's next change (low, then high) still makes a clean edge, and a
 * level-triggered pin stays pending through the IOAPIC's restored IRR.
 * PCI first: it places the BARs (and tells virtio-pci where).
 */
int kvm_pc__load(struct kvm_vm *vm, const void *blob, size_t len)
{
	struct kvm_pc *pc = pc_of(vm);
	struct kvm_virtio_pci *vp[PC_NVIRTIO];
	uint8_t slot[PC_NVIRTIO];
	unsigned int n = pc__virtio(pc, vp, slot);
	struct pc_dev_parsed p;
	const char *bad = NULL;
	int err = pc__parse(pc, blob, len, &p);

	if (err)
		return err;
	pc->irq_quiet = true;
	err = kvm_pci__load(&pc->pci, p.model[PC_DEV_PCI - PC_DEV_SERIAL],
			    p.len[PC_DEV_PCI - PC_DEV_SERIAL]);
	if (err) {
		bad = "PCI configuration";
		goto out;
	}
	for (unsigned int i = 0; i < n; i++) {
		err = kvm_virtio_pci__load(vp[i], &p.virtio[i].st);
		if (err) {
			bad = "virtio device";
			goto out;
		}
	}
	err = kvm_serial__load(&pc->serial, p.model[0], p.len[0]);
	if (err) {
		bad = "UART";
		goto out;
	}
	err = kvm_i8042__load(&pc->i8042, p.model[1], p.len[1]);
	if (err) {
		bad = "i8042";
		goto out;
	}
	err = kvm_rtc__load(&pc->rtc, p.model[2], p.len[2]);
	if (err)
		bad = "RTC";
out:
	pc->irq_quiet = false;
	if (err)
		return kemari_err(
			err,
			"device state: the %s state does not fit this VM: run the same build with the same --disk/--net on both sides",
			bad);
	return 0;
}

/*
 * Frames queued on the TAP arrived while this side was a secondary: the
 * primary's guest took them, or their senders will send again. Delivered
 * now they would reach the guest twice or out of order.
 */
static void pc__tap_drain(struct kvm_pc *pc)
{
	/* Whole frames: a TAP read into a shorter buffer fails (EFAULT). */
	uint8_t *frame = malloc(KVM_VIRTIO_NET_MAX_FRAME);
	unsigned int n = 0;
	int err = 0;

	if (!frame) {
		kemari_warn(
			"takeover: no memory to drain TAP %s: its queued frames go to the guest",
			pc->tap.ifname);
		return;
	}
	while (n < PC_TAP_DRAIN_MAX) {
		if (read(pc->tap_fd, frame, KVM_VIRTIO_NET_MAX_FRAME) >= 0)
			n++;
		else if (errno != EINTR)
			break;
	}
	if (n < PC_TAP_DRAIN_MAX && errno != EAGAIN && errno != EWOULDBLOCK)
		err = -errno;
	free(frame);
	if (n == PC_TAP_DRAIN_MAX || err)
		kemari_warn("takeover: TAP %s not drained after %u frames: %s",
			    pc->tap.ifname, n,
			    err ? strerror(-err) : "they keep coming");
	kemari_debug(
		"takeover: dropped %u frames queued on TAP %s while secondary",
		n, pc->tap.ifname);
}

/*
 * This side's TAP becomes the guest's: drop what it queued, then announce
 * the guest's MAC (and address, if the command line names it) so the
 * bridge and the peers switch to this port at once. The first round goes
 * now, the rest from the I/O thread on their schedule.
 */
static void pc__takeover(struct kvm_pc *pc)
{
	const uint8_t *m = pc->tap.mac;
	char what[64] = "RARP";
	int err;

	pc__tap_drain(pc);
	err = kvm_announce__cmdline_ip(pc->vm->cfg.cmdline, &pc->announce_ip);
	pc->announce_garp = !err;
	if (!err) {
		const uint8_t *a = (const uint8_t *)&pc->announce_ip;

		snprintf(what, sizeof(what),
			 "RARP and gratuitous ARP for %u.%u.%u.%u", a[0], a[1],
			 a[2], a[3]);
	} else if (err == -EINVAL) {
		snprintf(
			what, sizeof(what),
			"RARP only: kemari.ip= on the command line unreadable");
	}
	kemari_info(
		"takeover: announcing %02x:%02x:%02x:%02x:%02x:%02x on TAP %s (%s), %u rounds",
		m[0], m[1], m[2], m[3], m[4], m[5], pc->tap.ifname, what,
		KVM_ANNOUNCE_ROUNDS);
	pc->announce_t0 = kemari_now_ns();
	pc->announce_next = 0;
	pc__announce_due(pc);
}

int kvm_pc__reattach(struct kvm_vm *vm, bool kick)
{
	struct kvm_pc *pc = pc_of(vm);
	struct kvm_virtio_pci *vp[PC_NVIRTIO];
	uint8_t slot[PC_NVIRTIO];
	uint32_t pending[PC_NVIRTIO];
	unsigned int n = pc__virtio(pc, vp, slot);
	int err;

	for (unsigned int i = 0; i < n; i++) {
		err = kvm_virtio_pci__reattach(vp[i], &pending[i]);
		if (err)
			return err;
	}
	if (!kick)
		return 0;
	/* Announced before the re-issued output leaves, so that its answers
	 * come to this port already. */
	if (pc->net)
		pc__takeover(pc);
	for (unsigned int i = 0; i < n; i++)
		for (unsigned int q = 0; pending[i] >> q; q++)
			if (pending[i] & (1U << q)) {
				err = kvm_virtio_pci__kick(vp[i], q);
				if (err)
					return err;
			}
	return 0;
}
