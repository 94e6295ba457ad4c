#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The Linux guest image (docs/linux-guest.md): Debian's stock kernel exactly
# as shipped, and an initramfs with busybox, the virtio modules, the static
# kemari-kvstore (guest/linux/kvstore.c) and guest/linux/init.
#
#   scripts/linux-guest.sh [--overlay=DIR]... [--out=DIR]
#                           $BUILD/guests/linux/vmlinuz and initrd.img
#   scripts/linux-guest.sh --kvstore
#                           $BUILD/guests/linux/kemari-kvstore only
#
# --overlay=DIR copies DIR's tree over the initramfs root (repeatable, in
# order): add a service, /etc/kemari-guest.conf, more modules, or a new /init.
# --out=DIR puts vmlinuz and initrd.img there instead (e.g. a variant image
# built with overlays next to the stock one).
# Each part is rebuilt only when its inputs' content changes (*.stamp).
# BUILD defaults to build (relative to the repository root);
# KEMARI_VM_CACHE to /var/cache/kemari-vm, the kernel package cache shared
# with tests/vm/vm.sh. Exit 77: cannot build here, the reason on stderr.
set -euo pipefail

usage() {
	sed -n '3,${/^#/!q;s/^# \{0,1\}//;p}' "$0"
}

overlays=()
only_kvstore=0
img_out=
for a in "$@"; do
	case $a in
	--overlay=*)
		d=${a#--overlay=}
		[ -d "$d" ] || { echo "linux-guest: --overlay=$d: not a directory" >&2; exit 2; }
		overlays+=("$(cd "$d" && pwd)")
		;;
	--out=*)
		img_out=${a#--out=}
		mkdir -p "$img_out" && img_out=$(cd "$img_out" && pwd)
		;;
	--kvstore) only_kvstore=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "linux-guest: unknown argument '$a'" >&2; usage >&2; exit 2 ;;
	esac
done

SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
OUT=$BUILD/guests/linux
IMG=${img_out:-$OUT}
CACHE=${KEMARI_VM_CACHE:-/var/cache/kemari-vm}
# virtio_pci drives the VMM's legacy (transitional) virtio-pci devices;
# their dependencies come from the package's modules.dep.
MODULES="virtio_pci virtio_blk virtio_net"
GCC=${KEMARI_GUEST_GCC:-gcc}
KVSTORE_SRCS="guest/linux/kvstore.c guest/kv/kvcore.c guest/kv/wal.c guest/rt/num.c guest/rt/crc32.c"
KVSTORE_HDRS="guest/kv/kvcore.h guest/kv/wal.h guest/rt/lib.h"
KVSTORE_CFLAGS="-static -O2 -g -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Wmissing-prototypes -Wstrict-prototypes -Wshadow -Wformat=2${WERROR:+ -Werror}"

die() { echo "linux-guest: $*" >&2; exit 1; }
die77() { echo "linux-guest: $*" >&2; exit 77; }
hash() { sha256sum | cut -d' ' -f1; }
# FILE is there and was made from inputs hashing to STAMP.
fresh() { [ -e "$1" ] && [ "$(cat "$1.stamp" 2>/dev/null)" = "$2" ]; }

mkdir -p "$OUT"
exec 8>"$OUT/.lock"
flock 8

build_kvstore() {
	local bin=$OUT/kemari-kvstore stamp
	# shellcheck disable=SC2086
	stamp=$({ echo "$GCC $KVSTORE_CFLAGS"; "$GCC" --version | head -1; cat $KVSTORE_SRCS $KVSTORE_HDRS; } | hash)
	fresh "$bin" "$stamp" && return 0
	echo "linux-guest: building $bin (static)"
	# shellcheck disable=SC2086
	"$GCC" $KVSTORE_CFLAGS -o "$bin.tmp" $KVSTORE_SRCS ||
		die "cannot build kemari-kvstore (gcc -static needs libc6-dev: run 'make deps')"
	mv "$bin.tmp" "$bin"
	echo "$stamp" >"$bin.stamp"
}

# The package behind linux-image-amd64, as tests/vm/vm.sh resolves it; with
# no package lists (offline), the newest one already cached.
kernel_package() {
	local pkg deb
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/{print $2; exit}')
	if [ -z "$pkg" ]; then
		deb=$(ls "$CACHE"/linux-image-[0-9]*_amd64.deb "$OUT"/cache/linux-image-[0-9]*_amd64.deb 2>/dev/null |
			sort -V | tail -1 || true)
		[ -n "$deb" ] || die77 "cannot resolve the kernel package behind linux-image-amd64 (apt-cache), and none is cached in $CACHE"
		pkg=$(basename "${deb%%_*}")
		echo "linux-guest: apt-cache cannot resolve linux-image-amd64: using the cached $pkg" >&2
	fi
	echo "$pkg"
}

# The .deb of $1, downloaded once into the shared cache (or under $OUT
# when that is not writable).
kernel_deb() {
	local pkg=$1 deb dir tmp
	deb=$(ls "$CACHE/${pkg}"_*.deb "$OUT/cache/${pkg}"_*.deb 2>/dev/null | head -1 || true)
	[ -n "$deb" ] && { echo "$deb"; return 0; }
	dir=$CACHE
	mkdir -p "$dir" 2>/dev/null && [ -w "$dir" ] || dir=$OUT/cache
	mkdir -p "$dir"
	# vm.sh's lock: one download at a time into the shared cache.
	(
		flock 9
		ls "$dir/${pkg}"_*.deb >/dev/null 2>&1 && exit 0
		echo "linux-guest: downloading $pkg into $dir" >&2
		tmp=$(mktemp -d "$dir/.dl.XXXXXX")
		if ! (cd "$tmp" && apt-get download "$pkg" >/dev/null 2>&1); then
			rm -rf "$tmp"
			exit 1
		fi
		mv "$tmp"/*.deb "$dir/"
		rm -rf "$tmp"
	) 9>"$dir/.lock" || die77 "apt-get download $pkg failed: is the package registry reachable?"
	ls "$dir/${pkg}"_*.deb | head -1
}

# $OUT/kernel: vmlinuz from the package, and the modules $MODULES need,
# in load order (modules.order).
build_kernel() {
	local pkg deb stamp kdir=$OUT/kernel tmp kv dep order=() m line d f
	pkg=$(kernel_package)
	deb=$(kernel_deb "$pkg")
	stamp=$(echo "$(basename "$deb") $MODULES" | hash)
	fresh "$kdir/vmlinuz" "$stamp" && return 0
	command -v depmod >/dev/null || die77 "depmod missing: run 'make deps' (package kmod)"
	echo "linux-guest: unpacking $(basename "$deb")"
	tmp=$(mktemp -d "$OUT/tmp.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	dpkg-deb -x "$deb" "$tmp/root"
	kv=$(ls "$tmp/root/lib/modules")
	[ -n "$kv" ] && [ -f "$tmp/root/boot/vmlinuz-$kv" ] ||
		die "$deb: no /boot/vmlinuz-* and /lib/modules/* pair"
	depmod -b "$tmp/root" "$kv"
	dep=$tmp/root/lib/modules/$kv/modules.dep
	# Load order: dependencies first, as modules.dep lists them (reversed).
	for m in $MODULES; do
		line=$(grep -E "/$m\.ko(\.xz|\.zst|\.gz)?:" "$dep") || die "module $m not in $pkg"
		for d in $(echo "${line#*:}" | tr ' ' '\n' | tac) "${line%%:*}"; do
			[ -n "$d" ] || continue
			case " ${order[*]-} " in *" $d "*) ;; *) order+=("$d") ;; esac
		done
	done
	mkdir -p "$tmp/kernel/modules"
	cp "$tmp/root/boot/vmlinuz-$kv" "$tmp/kernel/vmlinuz"
	echo "$kv" >"$tmp/kernel/release"
	: >"$tmp/kernel/modules.order"
	# busybox insmod takes plain .ko files only.
	for f in "${order[@]}"; do
		m=$(basename "$f")
		case $m in
		*.xz) xz -dc "$tmp/root/lib/modules/$kv/$f" >"$tmp/kernel/modules/${m%.xz}" ;;
		*.zst) zstd -qdc "$tmp/root/lib/modules/$kv/$f" >"$tmp/kernel/modules/${m%.zst}" ;;
		*.gz) gzip -dc "$tmp/root/lib/modules/$kv/$f" >"$tmp/kernel/modules/${m%.gz}" ;;
		*) cp "$tmp/root/lib/modules/$kv/$f" "$tmp/kernel/modules/" ;;
		esac
		echo "${m%.ko*}.ko" >>"$tmp/kernel/modules.order"
	done
	rm -rf "$kdir"
	mv "$tmp/kernel" "$kdir"
	echo "$stamp" >"$kdir/vmlinuz.stamp"
	rm -rf "$tmp"
	trap - EXIT
	echo "linux-guest: kernel $kv, modules: $(tr '\n' ' ' <"$kdir/modules.order")"
}

build_initrd() {
	local kdir=$OUT/kernel img=$IMG/initrd.img stamp tmp root o
	[ -x /bin/busybox ] || die77 "busybox missing: run 'make deps' (package busybox-static)"
	command -v cpio >/dev/null || die77 "cpio missing: run 'make deps'"
	stamp=$({
		cat "$kdir/vmlinuz.stamp" "$kdir/modules.order"
		sha256sum /bin/busybox "$OUT/kemari-kvstore" guest/linux/init "$SELF"
		for o in "${overlays[@]}"; do
			echo "overlay $o"
			tar -C "$o" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - .
		done
	} | hash)
	if ! fresh "$img" "$stamp"; then
		tmp=$(mktemp -d "$OUT/tmp.XXXXXX")
		trap 'rm -rf "$tmp"' EXIT
		root=$tmp/root
		mkdir -p "$root"/{bin,dev,proc,sys,etc,tmp,run,lib/modules}
		cp /bin/busybox "$root/bin/busybox"
		strip -o "$root/bin/kemari-kvstore" "$OUT/kemari-kvstore"
		cp guest/linux/init "$root/init"
		chmod 755 "$root/init"
		cp "$kdir"/modules/*.ko "$root/lib/modules/"
		cp "$kdir/modules.order" "$root/etc/kemari-modules"
		for o in "${overlays[@]}"; do
			cp -a "$o"/. "$root/"
		done
		(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
			cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9n >"$img.tmp"
		mv "$img.tmp" "$img"
		echo "$stamp" >"$img.stamp"
		rm -rf "$tmp"
		trap - EXIT
		echo "linux-guest: $img ($(($(stat -c %s "$img") / 1024)) KiB)"
	fi
	cmp -s "$kdir/vmlinuz" "$IMG/vmlinuz" || cp "$kdir/vmlinuz" "$IMG/vmlinuz"
}

build_kvstore
[ $only_kvstore = 1 ] && exit 0
build_kernel
build_initrd
