# SPDX-License-Identifier: MIT
#
# Guest images, included by the top-level Makefile (which sets BUILD).
#
# Exports:
#   GUEST_ELFS       the freestanding images: kvstore.elf and dirtier.elf
#   KV_HOST_SRCS     the pure kvstore sources, for the host unit-test binary
#                    (plain hosted C; they include their headers relatively,
#                    so no extra -I is needed)
#   KV_HOST_OBJS     the same compiled by the rule below with $(CC) $(CFLAGS)
#   KV_TEST_SRCS     the unit tests of that code (Criterion)
# Targets: guest-elfs, guest-check-nosse (no SSE/x87 in the images).
#
# The images are built with the host gcc, never with $(CC)/$(CFLAGS), which
# may carry sanitizers or PIE: the guest has no libc, no SSE (it faults
# there), no red zone (nothing is safe below RSP when the VMM looks) and is
# linked to run at KEMARI_IMAGE_MIN_GPA.

BUILD ?= build
GUEST_CC ?= gcc

GUEST_CFLAGS := -ffreestanding -nostdlib -static -mno-red-zone -fno-pic \
	-fno-pie -no-pie -fno-stack-protector -fcf-protection=none \
	-mgeneral-regs-only -mno-sse -mno-mmx -mno-80387 -O2 -g \
	-Wall -Wextra -Wmissing-prototypes -Wstrict-prototypes -Wshadow \
	-Wformat=2 -Iinclude \
	-fno-asynchronous-unwind-tables -fno-tree-loop-distribute-patterns \
	-MMD -MP
GUEST_LDFLAGS := -T guest/guest.ld -Wl,--build-id=none \
	-Wl,-z,max-page-size=0x1000 -Wl,-z,noexecstack

GUEST_RT_SRCS := guest/rt/start.S guest/rt/rt.c guest/rt/mem.c \
	guest/rt/printf.c guest/rt/num.c guest/rt/crc32.c \
	guest/rt/traps.S guest/rt/traps.c
KV_HOST_SRCS := guest/kv/kvcore.c guest/kv/wal.c guest/rt/num.c \
	guest/rt/crc32.c
KV_TEST_SRCS := tests/unit/test_kvproto.c

GUEST_OBJDIR := $(BUILD)/guests/obj
guest_objs = $(patsubst guest/%,$(GUEST_OBJDIR)/%.o,$(1))

GUEST_RT_OBJS := $(call guest_objs,$(GUEST_RT_SRCS))
GUEST_KVSTORE_OBJS := $(call guest_objs,guest/kvstore.c guest/kv/kvcore.c \
	guest/kv/wal.c)
GUEST_DIRTIER_OBJS := $(call guest_objs,guest/dirtier.c)
GUEST_OBJS := $(sort $(GUEST_RT_OBJS) $(GUEST_KVSTORE_OBJS) \
	$(GUEST_DIRTIER_OBJS))

GUEST_ELFS := $(BUILD)/guests/kvstore.elf $(BUILD)/guests/dirtier.elf

KV_HOST_OBJS := $(patsubst guest/%.c,$(BUILD)/kvhost/%.o,$(KV_HOST_SRCS))

# Static pattern rules: they only ever match these objects, whatever
# pattern rules the including Makefile has.
$(filter %.c.o,$(GUEST_OBJS)): $(GUEST_OBJDIR)/%.c.o: guest/%.c guest/guest.mk
	@mkdir -p $(@D)
	$(Q)$(GUEST_CC) $(GUEST_CFLAGS) -c $< -o $@

$(filter %.S.o,$(GUEST_OBJS)): $(GUEST_OBJDIR)/%.S.o: guest/%.S guest/guest.mk
	@mkdir -p $(@D)
	$(Q)$(GUEST_CC) $(GUEST_CFLAGS) -c $< -o $@

$(BUILD)/guests/kvstore.elf: $(GUEST_RT_OBJS) $(GUEST_KVSTORE_OBJS) guest/guest.ld
	$(Q)$(GUEST_CC) $(GUEST_CFLAGS) $(GUEST_LDFLAGS) -o $@ \
		$(GUEST_RT_OBJS) $(GUEST_KVSTORE_OBJS)

$(BUILD)/guests/dirtier.elf: $(GUEST_RT_OBJS) $(GUEST_DIRTIER_OBJS) guest/guest.ld
	$(Q)$(GUEST_CC) $(GUEST_CFLAGS) $(GUEST_LDFLAGS) -o $@ \
		$(GUEST_RT_OBJS) $(GUEST_DIRTIER_OBJS)

$(KV_HOST_OBJS): $(BUILD)/kvhost/%.o: guest/%.c guest/guest.mk
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

.PHONY: guest-elfs guest-check-nosse
guest-elfs: $(GUEST_ELFS)

guest-check-nosse: $(GUEST_ELFS)
	$(Q)sh guest/check-nosse.sh $(GUEST_ELFS)

-include $(GUEST_OBJS:.o=.d) $(KV_HOST_OBJS:.o=.d)
