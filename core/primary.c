// SPDX-License-Identifier: MIT
#include <errno.h>
#include "engine_priv.h"
#include "kemari/kemari.h"
int primary__run(struct kemari_engine *e) { (void)e; return -ENOSYS; }
int primary__event(void *ctx, struct kemari_event *ev) { (void)ctx; return kemari_event__release(ev); }
int primary__tick(void *ctx) { (void)ctx; return 0; }
