// SPDX-License-Identifier: MIT
/*
 * The libfabric transport's rules (transports/ofi/ofi_prov.c), without a
 * provider: mr_mode -> descriptors/addresses/keys and the default provider
 * order. How runs become writes and credits flow is transports/common's
 * (test_xp_plan.c, test_xp_common.c).
 */
#if __has_include(<rdma/fabric.h>)
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "../../transports/ofi/ofi.h"

static void mr_is(struct ofi_mr_use u, int local, int virt, int prov, int ep)
{
	cr_assert(eq(int, u.local, local));
	cr_assert(eq(int, u.virt_addr, virt));
	cr_assert(eq(int, u.prov_key, prov));
	cr_assert(eq(int, u.endpoint, ep));
}

Test(ofi_mr, verbs_mode_uses_descriptors_addresses_and_provider_keys)
{
	struct ofi_mr_use u = ofi_mr__use(FI_MR_LOCAL | FI_MR_VIRT_ADDR |
					  FI_MR_ALLOCATED | FI_MR_PROV_KEY);
	char region[64];

	mr_is(u, 1, 1, 1, 0);
	cr_assert(
		eq(u64, ofi_mr__base(&u, region), (uint64_t)(uintptr_t)region));
	cr_assert(eq(u64, ofi_mr__requested_key(&u, 4), 0));
}

Test(ofi_mr, empty_mode_uses_offsets_and_our_keys)
{
	struct ofi_mr_use u = ofi_mr__use(0);
	char region[64];

	mr_is(u, 0, 0, 0, 0);
	cr_assert(eq(u64, ofi_mr__base(&u, region), 0));
	cr_assert(eq(u64, ofi_mr__requested_key(&u, 4), 4));
}

Test(ofi_mr, endpoint_and_basic_modes)
{
	struct ofi_mr_use u = ofi_mr__use(FI_MR_ENDPOINT | FI_MR_PROV_KEY);

	mr_is(u, 0, 0, 1, 1);
	u = ofi_mr__use(FI_MR_BASIC);
	mr_is(u, 1, 1, 1, 0);
}

Test(ofi_prov, verbs_then_tcp_then_sockets_never_shm_udp_or_layers)
{
	cr_assert(eq(int, ofi_prov__rank("verbs", false), 0));
	cr_assert(eq(int, ofi_prov__rank("tcp", false), 1));
	cr_assert(eq(int, ofi_prov__rank("sockets", false), 2));
	cr_assert(eq(int, ofi_prov__rank("net", false), 3));
	cr_assert(eq(int, ofi_prov__rank("shm", false), -1));
	cr_assert(eq(int, ofi_prov__rank("udp", false), -1));
	cr_assert(eq(int, ofi_prov__rank("verbs;ofi_rxm", false), -1));
	cr_assert(eq(int, ofi_prov__rank("ofi_rxd", false), -1));
	cr_assert(eq(int, ofi_prov__rank(NULL, false), -1));
}

Test(ofi_prov, rdm_for_shm_efa_and_layers_msg_otherwise)
{
	cr_assert(eq(int, ofi_prov__rdm("shm"), 1));
	cr_assert(eq(int, ofi_prov__rdm("efa"), 1));
	cr_assert(eq(int, ofi_prov__rdm("tcp;ofi_rxm"), 1));
	cr_assert(eq(int, ofi_prov__rdm("verbs;ofi_rxm"), 1));
	cr_assert(eq(int, ofi_prov__rdm("verbs;ofi_rxd"), 1));
	/* MSG exactly as before, and the default choice. */
	cr_assert(eq(int, ofi_prov__rdm("tcp"), 0));
	cr_assert(eq(int, ofi_prov__rdm("verbs"), 0));
	cr_assert(eq(int, ofi_prov__rdm("sockets"), 0));
	cr_assert(eq(int, ofi_prov__rdm("shmem"), 0));
	cr_assert(eq(int, ofi_prov__rdm(""), 0));
	cr_assert(eq(int, ofi_prov__rdm(NULL), 0));
	/* ... which never picks an RDM provider by itself. */
	cr_assert(eq(int, ofi_prov__rank("efa", false), -1));
	cr_assert(eq(int, ofi_prov__rank("shm", false), -1));
}

Test(ofi_prov, no_verbs_on_loopback)
{
	cr_assert(eq(int, ofi_prov__rank("verbs", true), -1));
	cr_assert(eq(int, ofi_prov__rank("tcp", true), 1));
	cr_assert(eq(int, ofi_addr__loopback(0x7f000001), 1));
	cr_assert(eq(int, ofi_addr__loopback(0x7f0a0b0c), 1));
	cr_assert(
		eq(int, ofi_addr__loopback(0xa9fe4d01), 0)); /* 169.254.77.1 */
}
#endif
