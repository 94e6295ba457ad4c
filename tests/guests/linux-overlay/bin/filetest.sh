#!/bin/busybox sh
# filetest.sh write|read: a 1 MiB file on an ext2 filesystem on /dev/vda
# (busybox mke2fs; the kernel's ext4 driver mounts ext2: the image is built
# with --modules=ext4,crc32c_generic).
#   write  makes the filesystem, writes /mnt/mebibyte from /dev/urandom,
#          syncs and unmounts, and prints the MD5 of the data it wrote
#   read   mounts the filesystem and prints the MD5 of /mnt/mebibyte
# Each prints "filetest: MODE on FSTYPE" once mounted, then
# "filetest: MODE md5 SUM"; any failure exits 1 with a line saying what.
mode=$1
fail() { echo "filetest: $mode: $*"; exit 1; }
mkdir -p /mnt
case $mode in
write)
	# 256-byte inodes: timestamps past 2038, as mke2fs.conf makes them
	mke2fs -F -I 256 /dev/vda >/dev/null || fail "mke2fs /dev/vda failed"
	dd if=/dev/urandom of=/tmp/mebibyte bs=1048576 count=1 2>/dev/null ||
		fail "no random data"
	;;
read) ;;
*) fail "expected write or read" ;;
esac
mount -t ext2 /dev/vda /mnt || fail "cannot mount /dev/vda"
echo "filetest: $mode on $(awk '$2 == "/mnt" { print $3 }' /proc/mounts)"
if [ "$mode" = write ]; then
	cp /tmp/mebibyte /mnt/mebibyte || fail "cannot write /mnt/mebibyte"
	sync
	src=/tmp/mebibyte
else
	src=/mnt/mebibyte
fi
[ "$(wc -c <"$src")" -eq 1048576 ] || fail "$src is not 1 MiB"
sum=$(md5sum "$src" | cut -d' ' -f1)
umount /mnt || fail "cannot unmount /mnt"
echo "filetest: $mode md5 $sum"
exit 0
