#!/usr/bin/env bash
# The event-channel tap of xen-patches/, run for real: boot the patched Xen
# hypervisor under QEMU TCG with Debian's 6.1 kernel as PV dom0 (the recipe
# of shared/XEN-IN-VM.md, the approach of tests/vm/vm.sh), start a PV domU
# and tap its console port from dom0 with a test program linked against the
# patched libxenctrl (tests/xen/evtchn-tap-test.c, run by dom0-tap.sh).
#
#   tests/xen/check-xen-tap.sh [XEN_TREE]
#   tests/xen/check-xen-tap.sh prepare     kernel pieces and packages only
#
# XEN_TREE is the patched and built Xen source tree (xen/xen, tools/include,
# tools/libs/*), by default the one scripts/check-patches.sh leaves in its
# cache. Prints the test's PASS/FAIL lines and "xen-tap: N passed, M failed".
# Exit 0 all passed, 1 a check failed, 124 the VM gave no result, 77 cannot
# run here (the reason on one line).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TREE=${1:-${KEMARI_XEN_TREE:-/var/cache/kemari-patches/build/xen}}
[ "$TREE" != prepare ] || TREE=
CACHE=${KEMARI_XEN_CACHE:-/var/cache/kemari-xen}
JOBROOT=${KEMARI_XEN_JOBS:-/var/tmp/kemari-xen}
TIMEOUT=${KEMARI_XEN_TIMEOUT:-1800}
DOM0_MODULES="xen-evtchn xen-privcmd xen-gntdev xen-gntalloc xenfs virtio_pci 9pnet_virtio 9p"
DOMU_MODULES="xen-privcmd"
PKGS=(qemu-system-x86 busybox-static kmod cpio xz-utils gcc libc6-dev libxen-dev
	xen-utils-4.17 xenstore-utils)

die77() { echo "check-xen-tap: $*" >&2; exit 77; }

deps() {
	local missing=() p
	for p in "${PKGS[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	[ "$(id -u)" -eq 0 ] || die77 "missing packages ${missing[*]} (run as root)"
	echo "check-xen-tap: installing ${missing[*]}" >&2
	# Xen's utilities must not start daemons on this (non-Xen) host.
	local rcd=/usr/sbin/policy-rc.d own=
	if [ ! -e $rcd ]; then
		printf '#!/bin/sh\nexit 101\n' >$rcd && chmod +x $rcd && own=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		-o Acquire::Retries=3 "${missing[@]}" >/dev/null 2>&1 ||
		{ [ -z "$own" ] || rm -f $rcd; die77 "apt-get install ${missing[*]} failed"; }
	[ -z "$own" ] || rm -f $rcd
}

# Kernel pieces from Debian's package, rebuilt when it or the code that makes
# them changes.
prepare_kernel() {
	local pkg stamp
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/{print $2; exit}')
	[ -n "$pkg" ] || die77 "cannot resolve the kernel package behind linux-image-amd64"
	stamp="$pkg $DOM0_MODULES $DOMU_MODULES $(declare -f prepare_kernel modules_for \
		build_dom0_initrd | sha256sum | cut -d' ' -f1)"
	mkdir -p "$CACHE"
	exec 9>"$CACHE/.lock"
	flock 9
	if [ -f "$CACHE/dom0-initrd.gz" ] && [ "$(cat "$CACHE/stamp" 2>/dev/null)" = "$stamp" ]; then
		return 0
	fi
	echo "check-xen-tap: preparing $pkg (dom0/domU kernel, dom0 initramfs) in $CACHE" >&2
	local deb
	deb=$(ls "$CACHE"/"$pkg"_*.deb 2>/dev/null | head -1 || true)
	if [ -z "$deb" ]; then
		(cd "$CACHE" && apt-get download "$pkg" >/dev/null 2>&1) ||
			die77 "apt-get download $pkg failed"
		deb=$(ls "$CACHE"/"$pkg"_*.deb | head -1)
	fi
	rm -rf "$CACHE/root"
	dpkg -x "$deb" "$CACHE/root"
	local kv
	kv=$(ls "$CACHE/root/lib/modules")
	depmod -b "$CACHE/root" "$kv"
	cp "$CACHE/root/boot/vmlinuz-$kv" "$CACHE/vmlinuz"
	# The domain builder unpacks an XZ bzImage slowly under TCG: hand xl the
	# ELF vmlinux inside it, gzipped.
	python3 - "$CACHE/vmlinuz" "$CACHE/vmlinux" <<'PY'
import lzma, sys
data = open(sys.argv[1], 'rb').read()
off = data.find(b'\xfd7zXZ\x00')
elf = lzma.LZMADecompressor().decompress(data[off:]) if off >= 0 else b''
if elf[:4] != b'\x7fELF':
    sys.exit('no XZ-compressed ELF kernel in ' + sys.argv[1])
open(sys.argv[2], 'wb').write(elf)
PY
	gzip -1 -f "$CACHE/vmlinux"
	rm -rf "$CACHE/mods" && mkdir -p "$CACHE/mods"
	modules_for "$kv" $DOM0_MODULES >"$CACHE/mods/dom0.order"
	modules_for "$kv" $DOMU_MODULES >"$CACHE/mods/domu.order"
	local f
	for f in $(cat "$CACHE/mods/dom0.order" "$CACHE/mods/domu.order"); do
		cp "$CACHE/root/lib/modules/$kv/$f" "$CACHE/mods/"
	done
	build_dom0_initrd
	echo "$stamp" >"$CACHE/stamp"
	rm -rf "$CACHE/root"
}

# Module files (relative to lib/modules/KV) for the names given, with their
# dependencies first, as modules.dep lists them.
modules_for() {
	local kv=$1 dep order=() m line d
	shift
	dep="$CACHE/root/lib/modules/$kv/modules.dep"
	for m in "$@"; do
		line=$(grep -E "/$m\.ko(\.[a-z]+)?:" "$dep") || die77 "module $m not in the kernel package"
		for d in $(echo "${line#*:}" | tr ' ' '\n' | tac) "${line%%:*}"; do
			[ -n "$d" ] || continue
			case " ${order[*]-} " in *" $d "*) ;; *) order+=("$d") ;; esac
		done
	done
	printf '%s\n' "${order[@]}"
}

build_dom0_initrd() {
	local ird="$CACHE/dom0-initrd" f
	rm -rf "$ird"
	mkdir -p "$ird"/{bin,proc,sys,dev,host,lib/modules}
	cp /bin/busybox "$ird/bin/busybox"
	for f in $(cat "$CACHE/mods/dom0.order"); do
		cp "$CACHE/mods/$(basename "$f")" "$ird/lib/modules/"
		basename "$f" >>"$ird/modules.order"
	done
	cat >"$ird/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do
	insmod /lib/modules/$m 2>/dev/null || echo "dom0-init: insmod $m failed"
done
job=$(sed -n 's/.*kemari.job=\([^ ]*\).*/\1/p' /proc/cmdline)
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /host
for d in tmp run var/log var/lib/xen; do mount -t tmpfs tmpfs /host/$d; done
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs tmpfs /host/dev/shm
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t xenfs xenfs /host/proc/xen
ln -sf /proc/self/fd /host/dev/fd
ip link set lo up
echo "KEMARI-XEN-READY"
chroot /host /bin/sh $job/run.sh </dev/null
echo "KEMARI-XEN-RC=$?"
sync
poweroff -f
INIT
	chmod +x "$ird/init"
	(cd "$ird" && find . | cpio -o -H newc 2>/dev/null | gzip -1 >"$CACHE/dom0-initrd.gz")
	rm -rf "$ird"
}

# The domU's initramfs: busybox, privcmd and the (static) guest program; it
# prints what Xen answered to its own tap domctls, then a line every 0.2 s.
build_domu_initrd() {
	local job=$1 ird=$1/domu f
	mkdir -p "$ird"/{bin,proc,sys,dev,lib/modules}
	cp /bin/busybox "$ird/bin/busybox"
	cp "$job/tap-guest" "$ird/bin/tap-guest"
	for f in $(cat "$CACHE/mods/domu.order"); do
		cp "$CACHE/mods/$(basename "$f")" "$ird/lib/modules/"
		basename "$f" >>"$ird/modules.order"
	done
	cat >"$ird/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# Debian's privcmd refuses a domU's hypercalls unless told otherwise: this
# domU must reach Xen itself, so that Xen is what refuses its domctls.
for m in $(cat /modules.order); do
	case $m in
	xen-privcmd.ko) insmod /lib/modules/$m unrestricted=1 ;;
	*) insmod /lib/modules/$m ;;
	esac
done
dom=$(sed -n 's/.*kemari.domid=\([0-9]*\).*/\1/p' /proc/cmdline)
/bin/tap-guest "${dom:-1}"
i=0
while :; do
	i=$((i + 1))
	echo "tick $i"
	usleep 200000
done
INIT
	chmod +x "$ird/init"
	(cd "$ird" && find . | cpio -o -H newc 2>/dev/null | gzip -1 >"$job/domu-initrd.gz")
	rm -rf "$ird"
}

main() {
	deps
	[ -f "$TREE/xen/xen" ] && [ -e "$TREE/tools/libs/ctrl/libxenctrl.so" ] ||
		die77 "no patched, built Xen tree at $TREE (run scripts/check-patches.sh first)"
	prepare_kernel
	exec 9>&-

	mkdir -p "$JOBROOT"
	local job
	job=$(mktemp -d "$JOBROOT/job.XXXXXX")
	chmod 755 "$job"
	local L="$TREE/tools/libs" libs="" l
	for l in ctrl evtchn call foreignmemory gnttab devicemodel toollog toolcore; do
		libs="$libs${libs:+:}$L/$l"
	done
	# The dom0 program against the patched headers and libxenctrl.
	cc -O2 -g -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wformat=2 \
		-Wmissing-prototypes -Wstrict-prototypes \
		-I"$TREE/tools/include" -o "$job/evtchn-tap-test" "$HERE/evtchn-tap-test.c" \
		-L"$L/ctrl" -L"$L/evtchn" -Wl,-rpath-link,"$libs" -lxenctrl -lxenevtchn ||
		{ echo "check-xen-tap: FAIL: evtchn-tap-test does not build against $TREE"; exit 1; }
	cc -O2 -static -std=gnu11 -Wall -Wextra -Werror -I"$TREE/tools/include" \
		-o "$job/tap-guest" "$HERE/tap-guest.c" ||
		{ echo "check-xen-tap: FAIL: tap-guest does not build against $TREE"; exit 1; }
	build_domu_initrd "$job"
	# The hypervisor image QEMU loads: the ELF32 multiboot xen, not xen.gz.
	cp "$TREE/xen/xen" "$job/xen"
	ln -s "$CACHE/vmlinux.gz" "$job/vmlinux.gz"
	cp "$HERE/dom0-tap.sh" "$job/dom0-tap.sh"
	printf 'exec /bin/sh %q %q %q %q\n' "$job/dom0-tap.sh" "$job" "$libs" "$job" >"$job/run.sh"

	local log="$job/console.log" rc
	# Multiboot modules: "kernel cmdline,initrd" (QEMU splits on commas).
	timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 -accel tcg \
		-m 2048 -smp 2 -nographic -no-reboot -net none \
		-kernel "$job/xen" \
		-append "console=com1 com1=115200,8n1 dom0_mem=512M,max:512M loglvl=warning guest_loglvl=warning" \
		-initrd "$CACHE/vmlinuz console=hvc0 loglevel=4 panic=-1 kemari.job=$job,$CACHE/dom0-initrd.gz" \
		-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
		</dev/null 2>&1 | tee "$log" | tr -d '\r' |
		sed -u -n '/KEMARI-XEN-READY/,$p' |
		grep --line-buffered -E '^(PASS|FAIL|xen-tap):|^  domU\|' || true
	rc=$(tr -d '\r' <"$log" | sed -n 's/^KEMARI-XEN-RC=\([0-9]*\).*/\1/p' | tail -1)
	if [ -z "$rc" ]; then
		echo "check-xen-tap: the VM ended without a result (timeout ${TIMEOUT}s or crash); console log: $log" >&2
		exit 124
	fi
	if [ "$rc" != 0 ]; then
		echo "check-xen-tap: failed (dom0 status $rc); console log: $log" >&2
		exit 1
	fi
	[ "${KEMARI_XEN_KEEP:-0}" = 1 ] || rm -rf "$job"
}

if [ "${1:-}" = prepare ]; then
	deps
	prepare_kernel
	exit 0
fi
main "$@"
