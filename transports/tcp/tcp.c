// SPDX-License-Identifier: MIT
#include "kemari/xport.h"
const struct kemari_xport_ops kemari_xport_tcp = { .name = "tcp" };
