#!/usr/bin/env bash
# Kemari-RDMA's patch series against Debian 12's own sources (make
# check-patches): fetch the pinned source packages, apply each series with no
# fuzz, build what it touches, then boot the patched Xen and exercise the
# event-channel tap (tests/xen/check-xen-tap.sh).
#
# Prints one line per series ("xen-patches: applied, built" or what failed)
# and the tap test's "xen-tap: N passed, M failed"; exits non-zero on any
# failure. Downloads, unpacked sources and builds are cached in
# $KEMARI_PATCHES_CACHE (default /var/cache/kemari-patches), outside the
# checkout, so a rerun only rebuilds what changed.
#
# Environment: KEMARI_PATCHES_ONLY="xen linux qemu" (a subset),
# KEMARI_PATCHES_BOOT=0 (skip the Xen boot test), KEMARI_PATCHES_JOBS=2,
# V=1 (show build output).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# Debian's own tools only: a python3 shim (pyenv) in PATH costs the Xen
# build minutes, as it runs python3 hundreds of times.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CACHE=${KEMARI_PATCHES_CACHE:-/var/cache/kemari-patches}
JOBS=${KEMARI_PATCHES_JOBS:-2}
ONLY=${KEMARI_PATCHES_ONLY:-xen linux qemu}
BOOT=${KEMARI_PATCHES_BOOT:-1}
LOGS=$CACHE/logs

# Source versions the series are made against (Debian 12). If the registry
# stops serving one, the newest served version of the same upstream branch
# is used instead, and the script says so.
declare -A PIN=([xen]=4.17.5+72-g01140da4e8-1 [linux]=6.1.176-1 [qemu]=1:7.2+dfsg-7+deb12u18)
declare -A BRANCH=([xen]=4.17 [linux]=6.1 [qemu]=7.2)

COMMON_DEPS=(build-essential dpkg-dev xz-utils python3)
XEN_DEPS=(bison flex autoconf autotools-dev pkg-config python3-dev uuid-dev
	libyajl-dev zlib1g-dev libncurses-dev)
LINUX_DEPS=(bc bison flex libssl-dev libelf-dev)
QEMU_DEPS=(ninja-build meson pkg-config libglib2.0-dev libpixman-1-dev zlib1g-dev libfdt-dev)

say() { echo "check-patches: $*" >&2; }
nice_run() { nice -n 10 "$@"; }
# run LOG CMD...: output to LOG (shown with V=1); status of CMD.
run() {
	local log=$1
	shift
	if [ "${V:-0}" = 1 ]; then
		"$@" 2>&1 | tee -a "$log"
		return "${PIPESTATUS[0]}"
	fi
	"$@" >>"$log" 2>&1
}

deps() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		say "missing packages: ${missing[*]} (run as root)"
		return 1
	fi
	say "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		-o Acquire::Retries=3 -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null 2>&1 ||
		{ say "apt-get install failed for: ${missing[*]}"; return 1; }
}

# Debian source repositories: added (deb-src twins of the deb822 entries in
# debian.sources) only if no deb-src entry exists yet.
enable_deb_src() {
	local src=/etc/apt/sources.list.d/debian.sources
	local ours=/etc/apt/sources.list.d/kemari-deb-src.sources
	if ! grep -rqsE '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
		[ -f "$src" ] || { say "no deb-src entry and no $src to derive one from"; return 1; }
		say "enabling Debian source repositories ($ours)"
		sed 's/^Types:.*/Types: deb-src/' "$src" >"$ours"
		apt-get update -qq -o Acquire::Retries=3 >/dev/null 2>&1 ||
			say "apt-get update reported errors (continuing)"
	elif ! grep -q '^Version:' < <(apt-cache showsrc xen 2>/dev/null); then
		apt-get update -qq -o Acquire::Retries=3 >/dev/null 2>&1 || true
	fi
}

# fetch PKG: sets VER to the version downloaded into $CACHE/dl.
fetch() {
	local pkg=$1 want=${PIN[$1]} v
	VER=
	if ls "$CACHE/dl/${pkg}_${want#*:}.dsc" >/dev/null 2>&1; then
		VER=$want
		return 0
	fi
	mkdir -p "$CACHE/dl"
	if (cd "$CACHE/dl" && apt-get source -qq --download-only "$pkg=$want") >>"$LOGS/fetch.log" 2>&1; then
		VER=$want
		return 0
	fi
	# The pin is gone: newest served version of the same branch that downloads.
	for v in $(apt-cache showsrc "$pkg" 2>/dev/null | sed -n 's/^Version: //p' | sort -u |
		sort -r -V); do
		case ${v#*:} in "${BRANCH[$pkg]}".*|"${BRANCH[$pkg]}"+*) ;; *) continue ;; esac
		ls "$CACHE/dl/${pkg}_${v#*:}.dsc" >/dev/null 2>&1 ||
			(cd "$CACHE/dl" && apt-get source -qq --download-only "$pkg=$v") >>"$LOGS/fetch.log" 2>&1 ||
			continue
		say "$pkg $want is no longer served; using $v, the newest served ${BRANCH[$pkg]} (the series may not apply)"
		VER=$v
		return 0
	done
	return 1
}

# unpack PKG VER: pristine tree at $CACHE/src/PKG-VER (Debian patches applied).
unpack() {
	local pkg=$1 ver=$2 dir=$CACHE/src/$1-${2#*:}
	[ -f "$dir/.kemari-unpacked" ] && return 0
	rm -rf "$dir"
	mkdir -p "$CACHE/src"
	(cd "$CACHE/src" && dpkg-source --no-check -x "$CACHE/dl/${pkg}_${ver#*:}.dsc" "$dir") \
		>>"$LOGS/$pkg-unpack.log" 2>&1 || return 1
	# dpkg-source leaves copies of the tarballs beside the tree.
	rm -f "$CACHE/src/${pkg}_"*
	touch "$dir/.kemari-unpacked"
}

# prepare_tree PKG VER SERIES_DIR: $CACHE/build/PKG is the pristine tree with
# the series applied. $CACHE/build/PKG.applied keeps a copy of the patches in
# the tree and their order. An existing tree (and its objects) is kept:
# patches after the first one that changed are reverted and the new ones
# applied, so only the files they touch rebuild. Sets APPLY_ERR on failure.
prepare_tree() {
	local pkg=$1 ver=$2 series=$3 tree=$CACHE/build/$1 state=$CACHE/build/$1.applied
	local p i k=0 old=() new=()
	APPLY_ERR=
	if [ -d "$tree" ] && [ "$(cat "$tree.version" 2>/dev/null)" != "$ver" ]; then
		rm -rf "$tree" "$state"
	fi
	[ -d "$tree" ] || rm -rf "$state"
	mkdir -p "$state"
	touch "$state/series"
	mapfile -t old < <(sed '/^$/d' "$state/series")
	mapfile -t new < <(grep -v '^#' "$series/series" | sed '/^$/d')
	for p in "${new[@]}"; do
		[ -f "$series/$p" ] || { APPLY_ERR="$p listed in series but missing"; return 1; }
	done
	while [ $k -lt ${#old[@]} ] && [ $k -lt ${#new[@]} ] && [ "${old[$k]}" = "${new[$k]}" ] &&
		cmp -s "$state/${old[$k]}" "$series/${new[$k]}"; do
		k=$((k + 1))
	done
	rm -f "$tree.ok"
	# Revert what changed, newest first; start from the pristine tree if
	# that fails.
	for ((i = ${#old[@]} - 1; i >= k; i--)); do
		if ! patch -d "$tree" -p1 -R -F0 -s --no-backup-if-mismatch \
			<"$state/${old[$i]}" >>"$LOGS/$pkg-apply.log" 2>&1; then
			rm -rf "$tree" && k=0
			break
		fi
		rm -f "$state/${old[$i]}"
		sed -i '$d' "$state/series"
	done
	if [ ! -d "$tree" ]; then
		rm -rf "$state" && mkdir -p "$state" "$CACHE/build" && touch "$state/series"
		cp -a "$CACHE/src/$pkg-${ver#*:}" "$tree" || { APPLY_ERR="cannot copy the source tree"; return 1; }
		echo "$ver" >"$tree.version"
	fi
	for ((i = k; i < ${#new[@]}; i++)); do
		p=${new[$i]}
		# Dry run first, so that a patch that does not apply leaves no
		# half-applied files behind.
		if ! patch -d "$tree" -p1 -F0 -N --dry-run --no-backup-if-mismatch <"$series/$p" \
			>"$LOGS/$pkg-apply.log" 2>&1 ||
			! patch -d "$tree" -p1 -F0 -N -s --no-backup-if-mismatch <"$series/$p" \
				>>"$LOGS/$pkg-apply.log" 2>&1; then
			APPLY_ERR="$p does not apply to $pkg $ver without fuzz: $(grep -m1 -iE 'fail|reject|malformed|garbage|skipping|reversed' "$LOGS/$pkg-apply.log")"
			return 1
		fi
		cp "$series/$p" "$state/$p"
		echo "$p" >>"$state/series"
	done
	touch "$tree.ok"
}

# ---- Xen: the hypervisor (defconfig + XSM/FLASK, so the FLASK hook is
# built too; the dummy policy stays the default) and libxenctrl.
build_xen() {
	local t=$CACHE/build/xen log=$LOGS/xen-build.log l
	: >"$log"
	if [ ! -f "$t/xen/.config" ]; then
		run "$log" make -C "$t/xen" defconfig || return 1
		printf 'CONFIG_XSM=y\nCONFIG_XSM_FLASK=y\nCONFIG_XSM_DUMMY_DEFAULT=y\n' >>"$t/xen/.config"
		run "$log" make -C "$t/xen" olddefconfig || return 1
	fi
	run "$log" nice_run make -C "$t/xen" -j"$JOBS" || return 1
	if [ ! -f "$t/config/Tools.mk" ]; then
		# Debian's orig tarball has no generated configure.
		cp /usr/share/misc/config.guess /usr/share/misc/config.sub "$t"/ &&
			(cd "$t" && run "$log" ./autogen.sh) || return 1
		# Only libxenctrl and the libraries under it are built: no firmware
		# (so iasl is never run), no daemons, no bindings.
		(cd "$t/tools" && run "$log" nice_run ./configure IASL=/bin/true \
			--disable-monitors --disable-ocamltools --disable-xsmpolicy \
			--disable-seabios --disable-golang --disable-qemu-traditional \
			--disable-ipxe --disable-rombios --disable-systemd --disable-9pfs \
			--disable-pvshim --with-system-qemu=/usr/bin/qemu-system-i386) || return 1
	fi
	run "$log" nice_run make -C "$t/tools/include" || return 1
	for l in toolcore toollog evtchn gnttab call foreignmemory devicemodel ctrl; do
		run "$log" nice_run make -C "$t/tools/libs/$l" -j"$JOBS" || return 1
	done
	[ -f "$t/xen/xen" ] && [ -e "$t/tools/libs/ctrl/libxenctrl.so" ]
}

# ---- Linux: only the objects of the touched drivers, with -Werror, on a
# defconfig that has the Xen backends as modules.
build_linux() {
	local t=$CACHE/build/linux log=$LOGS/linux-build.log d
	: >"$log"
	if [ ! -f "$t/.kemari-prepared" ]; then
		run "$log" make -C "$t" x86_64_defconfig xen.config || return 1
		"$t/scripts/config" --file "$t/.config" -e XEN -e XEN_DOM0 -e XEN_BACKEND \
			-m XEN_BLKDEV_BACKEND -m XEN_NETDEV_BACKEND -e BLK_DEV -e NETDEVICES \
			-d WERROR -d DEBUG_INFO_BTF -d MODULE_SIG || return 1
		run "$log" make -C "$t" olddefconfig || return 1
		run "$log" nice_run make -C "$t" -j"$JOBS" modules_prepare || return 1
		touch "$t/.kemari-prepared"
	fi
	for d in drivers/xen/xenbus/ drivers/block/xen-blkback/ drivers/net/xen-netback/; do
		run "$log" nice_run make -C "$t" -j"$JOBS" KCFLAGS=-Werror "$d" || return 1
	done
	ls "$t"/drivers/block/xen-blkback/xenbus.o "$t"/drivers/net/xen-netback/xenbus.o \
		"$t"/drivers/xen/xenbus/xenbus_client.o >/dev/null 2>&1
}

# ---- QEMU: configured for x86_64-softmmu with little else; only the objects
# of the touched files (and the unit test of the event-tap layer) are built.
QEMU_TARGETS_FILE=qemu-patches/build-targets
build_qemu() {
	local t=$CACHE/build/qemu log=$LOGS/qemu-build.log targets
	: >"$log"
	if [ ! -f "$t/build/build.ninja" ]; then
		rm -rf "$t/build" && mkdir -p "$t/build"
		(cd "$t/build" && run "$log" nice_run ../configure --target-list=x86_64-softmmu \
			--disable-docs --enable-werror --disable-tools --disable-guest-agent \
			--disable-slirp --disable-capstone --disable-gtk --disable-sdl \
			--disable-vnc --disable-opengl --disable-virglrenderer --disable-spice \
			--disable-xen --disable-kvm --disable-linux-aio --disable-linux-io-uring \
			--disable-libusb --disable-usb-redir --disable-curl --disable-gnutls \
			--disable-nettle --disable-gcrypt --disable-seccomp --disable-cap-ng \
			--disable-attr --disable-vhost-user --disable-libudev --disable-rbd) ||
			return 1
	fi
	# Object files of the touched sources, as ninja names them; listed by the
	# series itself so that the check follows the patches.
	targets=$(grep -v '^#' "$ROOT/$QEMU_TARGETS_FILE" | sed '/^$/d')
	[ -n "$targets" ] || return 1
	# shellcheck disable=SC2086
	(cd "$t/build" && run "$log" nice_run ninja -j"$JOBS" $targets) || return 1
	# Unit tests among the targets: link their object with GLib.
	local o
	for o in $targets; do
		case $o in tests/unit/*.p/*.c.o) ;; *) continue ;; esac
		(cd "$t/build" && run "$log" cc -pthread -o "${o%%.p/*}" "$o" \
			$(pkg-config --libs glib-2.0)) || return 1
	done
}

# Unit tests of the touched QEMU code (the series' build-targets name them).
test_qemu() {
	local t=$CACHE/build/qemu log=$LOGS/qemu-test.log o n=0
	: >"$log"
	for o in $(grep -v '^#' "$ROOT/$QEMU_TARGETS_FILE"); do
		case $o in tests/unit/*.p/*.c.o) ;; *) continue ;; esac
		run "$log" "$t/build/${o%%.p/*}" || return 1
		n=$((n + 1))
	done
	[ $n -eq 0 ] || EXTRA=", unit test passed"
}

# series PKG: fetch, unpack, apply, build; prints the series' line.
series() {
	local pkg=$1 dir=$ROOT/$1-patches name=$1-patches deps_var
	if [ ! -f "$dir/series" ]; then
		echo "$name: FAILED: $dir/series missing"
		return 1
	fi
	# One run per package at a time; different packages may build at once.
	exec 7>"$CACHE/.lock-$pkg"
	flock 7
	deps_var="${pkg^^}_DEPS[@]"
	deps "${COMMON_DEPS[@]}" "${!deps_var}" ||
		{ echo "$name: FAILED: build dependencies could not be installed"; return 1; }
	if [ -f "$CACHE/src/$pkg-${PIN[$pkg]#*:}/.kemari-unpacked" ]; then
		VER=${PIN[$pkg]}
	elif ! fetch "$pkg"; then
		echo "$name: FAILED: no $pkg ${BRANCH[$pkg]} source package could be downloaded (see $LOGS/fetch.log)"
		return 1
	fi
	if ! unpack "$pkg" "$VER"; then
		echo "$name: FAILED: dpkg-source could not unpack $pkg $VER (see $LOGS/$pkg-unpack.log)"
		return 1
	fi
	if ! prepare_tree "$pkg" "$VER" "$dir"; then
		echo "$name: FAILED: $APPLY_ERR"
		return 1
	fi
	# A tree whose patches and build recipe are those of its last good
	# build is not rebuilt (Xen would relink itself for a new timestamp).
	local stamp built=$CACHE/build/$pkg.built
	stamp=$( (cd "$CACHE/build/$pkg.applied" && cat series $(cat series)
		declare -f "build_$pkg"
		[ "$pkg" != qemu ] || cat "$ROOT/$QEMU_TARGETS_FILE") | sha256sum)
	if [ "$(cat "$built" 2>/dev/null)" = "$stamp" ]; then
		say "$pkg: same patches and recipe as its last build; not rebuilt"
	else
		rm -f "$built"
		if ! "build_$pkg"; then
			echo "$name: applied to $pkg $VER; build FAILED (last lines of $LOGS/$pkg-build.log follow)"
			tail -15 "$LOGS/$pkg-build.log" | sed 's/^/    /'
			return 1
		fi
		echo "$stamp" >"$built"
	fi
	EXTRA=
	if [ "$pkg" = qemu ] && ! test_qemu; then
		echo "$name: applied, built; unit test FAILED (see $LOGS/qemu-test.log)"
		return 1
	fi
	echo "$name: applied, built$EXTRA"
}

main() {
	local rc=0 pkg start=$SECONDS
	if [ "$(id -u)" -ne 0 ]; then
		say "must run as root (apt-get, cache in $CACHE)"
		exit 1
	fi
	mkdir -p "$CACHE" "$LOGS"
	exec 8>"$CACHE/.lock"
	flock 8
	enable_deb_src || exit 1
	exec 8>&-
	for pkg in $ONLY; do
		series "$pkg" || rc=1
	done
	if [ "$BOOT" = 1 ] && [[ " $ONLY " == *" xen "* ]]; then
		if [ -f "$CACHE/build/xen.ok" ] && [ -f "$CACHE/build/xen/xen/xen" ]; then
			"$ROOT/tests/xen/check-xen-tap.sh" "$CACHE/build/xen"
			case $? in
			0) ;;
			*) rc=1 ;;
			esac
		else
			echo "xen-tap: not run (the Xen series did not build)"
			rc=1
		fi
	fi
	say "done in $((SECONDS - start)) s"
	exit $rc
}

main "$@"
