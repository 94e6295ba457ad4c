// SPDX-License-Identifier: MIT
#include <errno.h>
#include "engine_priv.h"
int secondary__run(struct kemari_engine *e) { (void)e; return -ENOSYS; }
