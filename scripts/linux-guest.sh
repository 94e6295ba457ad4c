#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The Linux guest image (docs/linux-guest.md): Debian's stock kernel exactly
# as shipped, and an initramfs with busybox, the virtio modules, the static
# kemari-kvstore (guest/linux/kvstore.c) and guest/linux/init.
#
#   scripts/linux-guest.sh [--overlay=DIR]... [--modules=M[,M...]]... [--out=DIR]
#                           $BUILD/guests/linux/vmlinuz and initrd.img
#   scripts/linux-guest.sh --kvstore
#                           $BUILD/guests/linux/kemari-kvstore only
#
# --overlay=DIR copies DIR's tree over the initramfs root (repeatable, in
# order): add a service, /etc/kemari-guest.conf, or a new /init.
# --modules=M,... adds kernel modules of the package (e.g. ext4, vfat),
# each with every module it depends on (the package's modules.dep); /init
# loads them after the virtio ones, dependencies first. Names as modprobe
# takes them ('-' and '_' alike); a module built into the kernel is skipped.
# --out=DIR puts vmlinuz and initrd.img there instead (e.g. a variant image
# built with overlays or modules next to the stock one).
# Each part is rebuilt only when its inputs' content changes (*.stamp).
# BUILD defaults to build (relative to the repository root);
# KEMARI_VM_CACHE to /var/cache/kemari-vm, the kernel package cache shared
# with tests/vm/vm.sh. Exit 77: cannot build here, the reason on stderr.
set -euo pipefail

usage() {
	sed -n '3,${/^#/!q;s/^# \{0,1\}//;p}' "$0"
}

overlays=()
extra_modules=()
only_kvstore=0
img_out=
for a in "$@"; do
	case $a in
	--overlay=*)
		d=${a#--overlay=}
		[ -d "$d" ] || { echo "linux-guest: --overlay=$d: not a directory" >&2; exit 2; }
		overlays+=("$(cd "$d" && pwd)")
		;;
	--modules=*)
		for m in $(echo "${a#--modules=}" | tr ',' ' '); do
			case $m in
			*[!A-Za-z0-9_-]*) echo "linux-guest: --modules: '$m' is not a module name" >&2; exit 2 ;;
			esac
			extra_modules+=("$m")
		done
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

# The modules.dep paths of module $1 and everything it needs, dependencies
# first, appended to the array order (no duplicates); the package's
# modules.dep and modules.builtin are in $2. Returns 1 for a built-in one.
resolve_module() {
	local m=$1 dir=$2 pat line d
	pat=${m//[-_]/[-_]}
	if grep -qE "(^|/)$pat\.ko\$" "$dir/modules.builtin"; then
		return 1
	fi
	line=$(grep -E "(^|/)$pat\.ko(\.xz|\.zst|\.gz)?:" "$dir/modules.dep") ||
		die "module $m is not in the kernel package (modules.dep)"
	for d in $(echo "${line#*:}" | tr ' ' '\n' | tac) "${line%%:*}"; do
		[ -n "$d" ] || continue
		case " ${order[*]-} " in *" $d "*) ;; *) order+=("$d") ;; esac
	done
}

# Module file $1 (a modules.dep path under $2) as a plain .ko into dir $3:
# busybox insmod takes plain .ko files only.
plain_ko() {
	local f=$1 from=$2 to=$3 m
	m=$(basename "$f")
	case $m in
	*.xz) xz -dc "$from/$f" >"$to/${m%.xz}" ;;
	*.zst) zstd -qdc "$from/$f" >"$to/${m%.zst}" ;;
	*.gz) gzip -dc "$from/$f" >"$to/${m%.gz}" ;;
	*) cp "$from/$f" "$to/" ;;
	esac
}

# $OUT/kernel: vmlinuz from the package, the modules $MODULES need in load
# order (modules.order), and the package's modules.dep (after depmod) and
# modules.builtin, from which build_modules resolves more.
build_kernel() {
	local stamp kdir=$OUT/kernel tmp kv order=() m f
	KPKG=$(kernel_package)
	KDEB=$(kernel_deb "$KPKG")
	stamp=$(echo "$(basename "$KDEB") $MODULES" | hash)
	fresh "$kdir/vmlinuz" "$stamp" && [ -f "$kdir/modules.dep" ] && return 0
	command -v depmod >/dev/null || die77 "depmod missing: run 'make deps' (package kmod)"
	echo "linux-guest: unpacking $(basename "$KDEB")"
	tmp=$(mktemp -d "$OUT/tmp.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	dpkg-deb -x "$KDEB" "$tmp/root"
	kv=$(ls "$tmp/root/lib/modules")
	[ -n "$kv" ] && [ -f "$tmp/root/boot/vmlinuz-$kv" ] ||
		die "$KDEB: no /boot/vmlinuz-* and /lib/modules/* pair"
	depmod -b "$tmp/root" "$kv"
	mkdir -p "$tmp/kernel/modules"
	cp "$tmp/root/lib/modules/$kv/modules.dep" "$tmp/root/lib/modules/$kv/modules.builtin" "$tmp/kernel/"
	# Load order: dependencies first, as modules.dep lists them (reversed).
	for m in $MODULES; do
		resolve_module "$m" "$tmp/kernel" || die "module $m is built in: take it out of MODULES"
	done
	cp "$tmp/root/boot/vmlinuz-$kv" "$tmp/kernel/vmlinuz"
	echo "$kv" >"$tmp/kernel/release"
	: >"$tmp/kernel/modules.order"
	for f in "${order[@]}"; do
		plain_ko "$f" "$tmp/root/lib/modules/$kv" "$tmp/kernel/modules"
		m=$(basename "$f")
		echo "${m%.ko*}.ko" >>"$tmp/kernel/modules.order"
	done
	rm -rf "$kdir"
	mv "$tmp/kernel" "$kdir"
	echo "$stamp" >"$kdir/vmlinuz.stamp"
	rm -rf "$tmp"
	trap - EXIT
	echo "linux-guest: kernel $kv, modules: $(tr '\n' ' ' <"$kdir/modules.order")"
}

# The image's modules, MDIR/modules/*.ko in the order of MDIR/modules.order:
# $OUT/kernel's, or with --modules a set of the image's own in
# $IMG/initrd-modules: those and the extra ones with what they need, taken
# from the package, loaded after the virtio ones.
build_modules() {
	local kdir=$OUT/kernel stamp tmp kv order=() want=() m f
	MDIR=$kdir
	[ ${#extra_modules[@]} -eq 0 ] && return 0
	MDIR=$IMG/initrd-modules
	stamp=$(echo "$(cat "$kdir/vmlinuz.stamp") ${extra_modules[*]}" | hash)
	fresh "$MDIR/modules.order" "$stamp" && return 0
	for m in "${extra_modules[@]}"; do
		resolve_module "$m" "$kdir" ||
			echo "linux-guest: module $m is built into the kernel: nothing to add" >&2
	done
	kv=$(cat "$kdir/release")
	tmp=$(mktemp -d "$OUT/tmp.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	mkdir -p "$tmp/modules"
	cp "$kdir/modules.order" "$tmp/modules.order"
	cp "$kdir"/modules/*.ko "$tmp/modules/"
	for f in "${order[@]}"; do
		m=$(basename "$f")
		grep -qx "${m%.ko*}.ko" "$tmp/modules.order" && continue
		want+=("$f")
		echo "${m%.ko*}.ko" >>"$tmp/modules.order"
	done
	if [ ${#want[@]} -gt 0 ]; then
		dpkg-deb --fsys-tarfile "$KDEB" |
			tar -x -C "$tmp" "${want[@]/#/./lib/modules/$kv/}" ||
			die "cannot extract ${want[*]} from $KDEB"
		for f in "${want[@]}"; do
			plain_ko "$f" "$tmp/lib/modules/$kv" "$tmp/modules"
		done
	fi
	rm -rf "$MDIR"
	mkdir -p "$MDIR"
	mv "$tmp/modules" "$tmp/modules.order" "$MDIR/"
	echo "$stamp" >"$MDIR/modules.order.stamp"
	rm -rf "$tmp"
	trap - EXIT
	echo "linux-guest: $IMG: modules $(tr '\n' ' ' <"$MDIR/modules.order")"
}

build_initrd() {
	local kdir=$OUT/kernel img=$IMG/initrd.img stamp tmp root o
	[ -x /bin/busybox ] || die77 "busybox missing: run 'make deps' (package busybox-static)"
	command -v cpio >/dev/null || die77 "cpio missing: run 'make deps'"
	stamp=$({
		cat "$kdir/vmlinuz.stamp" "$MDIR/modules.order"
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
		cp "$MDIR"/modules/*.ko "$root/lib/modules/"
		cp "$MDIR/modules.order" "$root/etc/kemari-modules"
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
build_modules
build_initrd
