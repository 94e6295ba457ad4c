// SPDX-License-Identifier: MIT
/*
 * kvstore request execution, key table and per-client exactly-once table.
 * Pure logic: compiled into the guest and into the host unit tests.
 */
#include "kvcore.h"

struct kv_tok {
	const char *s;
	size_t len;
};

/* A reply being built: the part after "<client-id> <seq> ". */
struct kv_suffix {
	uint8_t kind;
	uint8_t len;
	char text[KV_SUFFIX_MAX];
};

static uint32_t kv__hash(const char *s, size_t len)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= (uint8_t)s[i];
		h *= 16777619u;
	}
	return h;
}

/* client-ids, keys and values: 1..64 bytes, each printable and not a space */
static bool kv__token_ok(const char *s, size_t len)
{
	size_t i;

	if (!len || len > KV_TOKEN_MAX)
		return false;
	for (i = 0; i < len; i++) {
		if ((uint8_t)s[i] < 0x21 || (uint8_t)s[i] > 0x7e)
			return false;
	}
	return true;
}

static bool kv__tok_is(const struct kv_tok *t, const char *word)
{
	size_t n = strlen(word);

	return t->len == n && !memcmp(t->s, word, n);
}

void kv__init(struct kv_state *st, uint32_t max_keys, uint32_t max_clients)
{
	uint32_t i;

	st->max_keys = RT_MAX(1u, RT_MIN(max_keys, (uint32_t)KV_MAX_KEYS));
	st->max_clients =
		RT_MAX(1u, RT_MIN(max_clients, (uint32_t)KV_MAX_CLIENTS));
	st->nkeys = 0;
	st->nclients = 0;
	for (i = 0; i < KV_KEY_BUCKETS; i++)
		st->key_bucket[i] = KV_NIL;
	for (i = 0; i < KV_CLIENT_BUCKETS; i++)
		st->client_bucket[i] = KV_NIL;
	for (i = 0; i < KV_MAX_KEYS; i++) {
		st->key[i].used = 0;
		st->key[i].next = i + 1 < KV_MAX_KEYS ? i + 1 : KV_NIL;
	}
	for (i = 0; i < KV_MAX_CLIENTS; i++) {
		st->client[i].used = 0;
		st->client[i].next = i + 1 < KV_MAX_CLIENTS ? i + 1 : KV_NIL;
	}
	st->key_free = 0;
	st->client_free = 0;
	st->lru_old = KV_NIL;
	st->lru_new = KV_NIL;
}

/* --- key table ----------------------------------------------------------- */

static uint32_t *kv__key_bucket(struct kv_state *st, const char *key,
				size_t klen)
{
	return &st->key_bucket[kv__hash(key, klen) & (KV_KEY_BUCKETS - 1)];
}

static uint32_t kv__key_find(const struct kv_state *st, const char *key,
			     size_t klen)
{
	uint32_t i = st->key_bucket[kv__hash(key, klen) & (KV_KEY_BUCKETS - 1)];

	while (i != KV_NIL) {
		const struct kv_key *k = &st->key[i];

		if (k->klen == klen && !memcmp(k->key, key, klen))
			return i;
		i = k->next;
	}
	return KV_NIL;
}

const char *kv__lookup(const struct kv_state *st, const char *key, size_t klen,
		       size_t *vlen)
{
	uint32_t i = kv__key_find(st, key, klen);

	if (i == KV_NIL)
		return NULL;
	*vlen = st->key[i].vlen;
	return st->key[i].val;
}

/* Insert or overwrite. -ENOSPC when the key is new and the table is full. */
static int kv__key_set(struct kv_state *st, const char *key, size_t klen,
		       const char *val, size_t vlen)
{
	uint32_t i = kv__key_find(st, key, klen);
	uint32_t *head;
	struct kv_key *k;

	if (i == KV_NIL) {
		if (st->nkeys >= st->max_keys || st->key_free == KV_NIL)
			return -ENOSPC;
		i = st->key_free;
		k = &st->key[i];
		st->key_free = k->next;
		head = kv__key_bucket(st, key, klen);
		k->next = *head;
		*head = i;
		k->used = 1;
		k->klen = (uint8_t)klen;
		memcpy(k->key, key, klen);
		st->nkeys++;
	}
	k = &st->key[i];
	k->vlen = (uint8_t)vlen;
	memcpy(k->val, val, vlen);
	return 0;
}

/* Remove a key; false if it was not there. */
static bool kv__key_del(struct kv_state *st, const char *key, size_t klen)
{
	uint32_t *link = kv__key_bucket(st, key, klen);

	while (*link != KV_NIL) {
		uint32_t i = *link;
		struct kv_key *k = &st->key[i];

		if (k->klen == klen && !memcmp(k->key, key, klen)) {
			*link = k->next;
			k->used = 0;
			k->next = st->key_free;
			st->key_free = i;
			st->nkeys--;
			return true;
		}
		link = &k->next;
	}
	return false;
}

/* --- client table -------------------------------------------------------- */

static uint32_t kv__client_find(const struct kv_state *st, const char *id,
				size_t len)
{
	uint32_t i =
		st->client_bucket[kv__hash(id, len) & (KV_CLIENT_BUCKETS - 1)];

	while (i != KV_NIL) {
		const struct kv_client *c = &st->client[i];

		if (c->id_len == len && !memcmp(c->id, id, len))
			return i;
		i = c->next;
	}
	return KV_NIL;
}

const struct kv_client *kv__client(const struct kv_state *st, const char *id,
				   size_t id_len)
{
	uint32_t i = kv__client_find(st, id, id_len);

	return i == KV_NIL ? NULL : &st->client[i];
}

static void kv__lru_unlink(struct kv_state *st, uint32_t i)
{
	struct kv_client *c = &st->client[i];

	if (c->lru_prev != KV_NIL)
		st->client[c->lru_prev].lru_next = c->lru_next;
	else
		st->lru_old = c->lru_next;
	if (c->lru_next != KV_NIL)
		st->client[c->lru_next].lru_prev = c->lru_prev;
	else
		st->lru_new = c->lru_prev;
}

static void kv__lru_push_new(struct kv_state *st, uint32_t i)
{
	struct kv_client *c = &st->client[i];

	c->lru_prev = st->lru_new;
	c->lru_next = KV_NIL;
	if (st->lru_new != KV_NIL)
		st->client[st->lru_new].lru_next = i;
	else
		st->lru_old = i;
	st->lru_new = i;
}

static void kv__client_touch(struct kv_state *st, uint32_t i)
{
	if (st->lru_new == i)
		return;
	kv__lru_unlink(st, i);
	kv__lru_push_new(st, i);
}

static void kv__client_evict_oldest(struct kv_state *st)
{
	uint32_t i = st->lru_old;
	struct kv_client *c = &st->client[i];
	uint32_t *link = &st->client_bucket[kv__hash(c->id, c->id_len) &
					    (KV_CLIENT_BUCKETS - 1)];

	while (*link != i)
		link = &st->client[*link].next;
	*link = c->next;
	kv__lru_unlink(st, i);
	c->used = 0;
	c->next = st->client_free;
	st->client_free = i;
	st->nclients--;
}

/* The entry for id, created (evicting the least recently used one if the
 * table is full) if needed, and made the most recently used. */
static struct kv_client *kv__client_get(struct kv_state *st, const char *id,
					size_t len)
{
	uint32_t i = kv__client_find(st, id, len);
	uint32_t *head;
	struct kv_client *c;

	if (i != KV_NIL) {
		kv__client_touch(st, i);
		return &st->client[i];
	}
	if (st->nclients >= st->max_clients || st->client_free == KV_NIL)
		kv__client_evict_oldest(st);
	i = st->client_free;
	c = &st->client[i];
	st->client_free = c->next;
	head = &st->client_bucket[kv__hash(id, len) & (KV_CLIENT_BUCKETS - 1)];
	c->next = *head;
	*head = i;
	c->used = 1;
	c->id_len = (uint8_t)len;
	memcpy(c->id, id, len);
	c->seq = 0;
	c->reply_len = 0;
	c->reply_kind = 0;
	st->nclients++;
	kv__lru_push_new(st, i);
	return c;
}

static void kv__client_store(struct kv_client *c, uint64_t seq, uint8_t kind,
			     const char *reply, size_t len)
{
	c->seq = seq;
	c->reply_kind = kind;
	c->reply_len = (uint8_t)len;
	memcpy(c->reply, reply, len);
}

/* --- replies ------------------------------------------------------------- */

static void kv__suffix_set(struct kv_suffix *sf, uint8_t kind, const char *a,
			   const char *b, size_t blen)
{
	size_t alen = strlen(a);

	sf->kind = kind;
	memcpy(sf->text, a, alen);
	memcpy(sf->text + alen, b, blen);
	sf->len = (uint8_t)(alen + blen);
}

static void kv__suffix_err(struct kv_suffix *sf, const char *reason)
{
	kv__suffix_set(sf, KV_REPLY_ERR, "ERR ", reason, strlen(reason));
}

/* reply := "<cid> <seq> " (the prefix) */
static void kv__reply_prefix(struct kv_result *res, const char *cid,
			     size_t cid_len, const char *seq, size_t seq_len)
{
	char *p = res->reply;

	memcpy(p, cid, cid_len);
	p += cid_len;
	*p++ = ' ';
	memcpy(p, seq, seq_len);
	p += seq_len;
	*p++ = ' ';
	res->prefix_len = (uint32_t)(p - res->reply);
	res->len = res->prefix_len;
	res->reply[res->len] = '\0';
}

static void kv__reply_append(struct kv_result *res, const char *s, size_t len)
{
	memcpy(res->reply + res->len, s, len);
	res->len += (uint32_t)len;
	res->reply[res->len] = '\0';
}

void kv__reply_err(struct kv_result *res, const char *reason)
{
	res->len = res->prefix_len;
	kv__reply_append(res, "ERR ", 4);
	kv__reply_append(res, reason, strlen(reason));
}

/* --- commands ------------------------------------------------------------ */

static void kv__rec_key(struct kv_rec *rec, uint8_t effect,
			const struct kv_tok *key, const char *val, size_t vlen)
{
	rec->effects |= effect;
	rec->key_len = (uint8_t)key->len;
	memcpy(rec->key, key->s, key->len);
	rec->val_len = (uint8_t)vlen;
	memcpy(rec->val, val, vlen);
}

static void kv__cmd_incr(struct kv_state *st, const struct kv_tok *key,
			 struct kv_suffix *sf, struct kv_rec *rec)
{
	char num[RT_I64_CHARS];
	const char *old;
	size_t olen, n;
	int64_t v = 0;

	old = kv__lookup(st, key->s, key->len, &olen);
	if (old) {
		int ret = rt__parse_i64(old, olen, &v);

		/* A stored number beyond int64 is not an integer to us. */
		if (ret) {
			kv__suffix_err(sf, "not-integer");
			return;
		}
	}
	if (v == INT64_MAX) {
		kv__suffix_err(sf, "overflow");
		return;
	}
	n = rt__fmt_i64(num, v + 1);
	if (kv__key_set(st, key->s, key->len, num, n)) {
		kv__suffix_err(sf, "full");
		return;
	}
	kv__rec_key(rec, KV_EFFECT_KEY_SET, key, num, n);
	kv__suffix_set(sf, KV_REPLY_VALUE, "OK ", num, n);
}

static const struct kv_cmd {
	const char *name;
	uint8_t nargs;
	uint8_t op; /* enum kv_op for logged commands, 0 otherwise */
} kv__cmds[] = {
	{ "PING", 0, 0 },	 { "GET", 1, 0 },
	{ "SET", 2, KV_OP_SET }, { "INCR", 1, KV_OP_INCR },
	{ "DEL", 1, KV_OP_DEL },
};

/* Run the command in tok[0..n) (tok[0] is CMD). Returns true if it must be
 * logged, with the state effects put in rec. */
static bool kv__exec(struct kv_state *st, const struct kv_tok *tok, size_t n,
		     struct kv_suffix *sf, struct kv_rec *rec)
{
	const struct kv_cmd *cmd = NULL;
	const char *val;
	size_t i, vlen;

	for (i = 0; n && i < RT_ARRAY_SIZE(kv__cmds); i++) {
		if (kv__tok_is(&tok[0], kv__cmds[i].name)) {
			cmd = &kv__cmds[i];
			break;
		}
	}
	if (!cmd) {
		kv__suffix_err(sf, "unknown-command");
		return false;
	}
	if (n - 1 != cmd->nargs) {
		kv__suffix_err(sf, "arity");
		return false;
	}
	for (i = 1; i < n; i++) {
		if (!kv__token_ok(tok[i].s, tok[i].len)) {
			kv__suffix_err(sf, "bad-token");
			return false;
		}
	}
	if (cmd->op) {
		memset(rec, 0, sizeof(*rec));
		rec->op = cmd->op;
	}

	switch (cmd->op) {
	default: /* the read-only commands */
		if (cmd->nargs == 0) {
			kv__suffix_set(sf, KV_REPLY_VALUE, "OK ", "PONG", 4);
			return false;
		}
		val = kv__lookup(st, tok[1].s, tok[1].len, &vlen);
		if (val)
			kv__suffix_set(sf, KV_REPLY_VALUE, "OK ", val, vlen);
		else
			kv__suffix_set(sf, KV_REPLY_NOTFOUND, "NOTFOUND", "",
				       0);
		return false;
	case KV_OP_SET:
		if (kv__key_set(st, tok[1].s, tok[1].len, tok[2].s,
				tok[2].len)) {
			kv__suffix_err(sf, "full");
		} else {
			kv__rec_key(rec, KV_EFFECT_KEY_SET, &tok[1], tok[2].s,
				    tok[2].len);
			kv__suffix_set(sf, KV_REPLY_OK, "OK", "", 0);
		}
		return true;
	case KV_OP_INCR:
		kv__cmd_incr(st, &tok[1], sf, rec);
		return true;
	case KV_OP_DEL:
		if (kv__key_del(st, tok[1].s, tok[1].len)) {
			kv__rec_key(rec, KV_EFFECT_KEY_DEL, &tok[1], "", 0);
			kv__suffix_set(sf, KV_REPLY_OK, "OK", "", 0);
		} else {
			kv__suffix_set(sf, KV_REPLY_NOTFOUND, "NOTFOUND", "",
				       0);
		}
		return true;
	}
}

int kv__handle(struct kv_state *st, const char *msg, size_t len,
	       struct kv_result *res)
{
	struct kv_tok tok[5]; /* seq, CMD, up to two args, one too many */
	char seqtxt[RT_U64_DIGITS];
	struct kv_suffix sf;
	const char *p, *end, *cid;
	size_t cid_len, ntok = 0, seq_len;
	struct kv_client *c;
	uint32_t ci;
	uint64_t seq;

	res->logged = false;
	res->len = 0;
	res->prefix_len = 0;
	res->reply[0] = '\0';

	if (len && msg[len - 1] == '\n') {
		len--;
		if (len && msg[len - 1] == '\r')
			len--;
	}
	for (cid_len = 0; cid_len < len && msg[cid_len] != ' '; cid_len++)
		;
	/* Without a client-id there is nobody to answer. */
	if (cid_len == len || !kv__token_ok(msg, cid_len))
		return -EINVAL;
	cid = msg;

	/* Split strictly on single spaces: "a  b" has an empty token. */
	end = msg + len;
	p = msg + cid_len + 1;
	for (;;) {
		const char *q = p;

		while (q < end && *q != ' ')
			q++;
		if (ntok < RT_ARRAY_SIZE(tok)) {
			tok[ntok].s = p;
			tok[ntok].len = (size_t)(q - p);
		}
		ntok++;
		if (q == end)
			break;
		p = q + 1;
	}

	if (rt__parse_u64(tok[0].s, tok[0].len, &seq)) {
		/* Echo what was sent, if it is printable enough to echo. */
		if (kv__token_ok(tok[0].s, tok[0].len))
			kv__reply_prefix(res, cid, cid_len, tok[0].s,
					 tok[0].len);
		else
			kv__reply_prefix(res, cid, cid_len, "?", 1);
		kv__reply_err(res, "bad-seq");
		return 0;
	}
	seq_len = rt__fmt_u64(seqtxt, seq);
	kv__reply_prefix(res, cid, cid_len, seqtxt, seq_len);

	ci = kv__client_find(st, cid, cid_len);
	if (ci != KV_NIL) {
		c = &st->client[ci];
		if (seq == c->seq) {
			kv__client_touch(st, ci);
			kv__reply_append(res, c->reply, c->reply_len);
			return 0;
		}
		if (seq < c->seq) {
			kv__reply_err(res, "stale");
			return 0;
		}
	}

	/*
	 * ntok counts every token, stored or not: kv__exec checks the arity
	 * before it looks at any argument, and no command takes more than
	 * two, so it never reads past the tokens kept in tok[].
	 */
	res->logged = kv__exec(st, tok + 1, ntok - 1, &sf, &res->rec);
	c = kv__client_get(st, cid, cid_len);
	kv__client_store(c, seq, sf.kind, sf.text, sf.len);
	kv__reply_append(res, sf.text, sf.len);

	if (res->logged) {
		struct kv_rec *rec = &res->rec;

		rec->effects |= KV_EFFECT_CLIENT;
		rec->seq = seq;
		rec->cid_len = (uint8_t)cid_len;
		memcpy(rec->cid, cid, cid_len);
		rec->reply_kind = sf.kind;
		rec->reply_len = sf.len;
		memcpy(rec->reply, sf.text, sf.len);
	}
	return 0;
}

/* --- replay and snapshots ------------------------------------------------ */

int kv__apply(struct kv_state *st, const struct kv_rec *rec)
{
	if ((rec->effects & (KV_EFFECT_KEY_SET | KV_EFFECT_KEY_DEL)) &&
	    !kv__token_ok(rec->key, rec->key_len))
		return -EINVAL;
	if ((rec->effects & KV_EFFECT_CLIENT) &&
	    (!kv__token_ok(rec->cid, rec->cid_len) ||
	     rec->reply_len > KV_SUFFIX_MAX))
		return -EINVAL;

	if (rec->effects & KV_EFFECT_KEY_SET) {
		if (!kv__token_ok(rec->val, rec->val_len))
			return -EINVAL;
		if (kv__key_set(st, rec->key, rec->key_len, rec->val,
				rec->val_len))
			return -ENOSPC;
	}
	if (rec->effects & KV_EFFECT_KEY_DEL)
		kv__key_del(st, rec->key, rec->key_len);
	if (rec->effects & KV_EFFECT_CLIENT) {
		struct kv_client *c;

		c = kv__client_get(st, rec->cid, rec->cid_len);
		kv__client_store(c, rec->seq, rec->reply_kind, rec->reply,
				 rec->reply_len);
	}
	return 0;
}

uint32_t kv__snap_count(const struct kv_state *st)
{
	return RT_MAX(st->nkeys, st->nclients);
}

void kv__snap_begin(const struct kv_state *st, struct kv_snap_iter *it)
{
	it->key_pos = 0;
	it->client = st->lru_old;
}

bool kv__snap_next(const struct kv_state *st, struct kv_snap_iter *it,
		   struct kv_rec *rec)
{
	memset(rec, 0, sizeof(*rec));
	rec->op = KV_OP_SNAP;
	while (it->key_pos < KV_MAX_KEYS && !st->key[it->key_pos].used)
		it->key_pos++;
	if (it->key_pos < KV_MAX_KEYS) {
		const struct kv_key *k = &st->key[it->key_pos++];

		rec->effects |= KV_EFFECT_KEY_SET;
		rec->key_len = k->klen;
		memcpy(rec->key, k->key, k->klen);
		rec->val_len = k->vlen;
		memcpy(rec->val, k->val, k->vlen);
	}
	if (it->client != KV_NIL) {
		const struct kv_client *c = &st->client[it->client];

		rec->effects |= KV_EFFECT_CLIENT;
		rec->seq = c->seq;
		rec->cid_len = c->id_len;
		memcpy(rec->cid, c->id, c->id_len);
		rec->reply_kind = c->reply_kind;
		rec->reply_len = c->reply_len;
		memcpy(rec->reply, c->reply, c->reply_len);
		it->client = c->lru_next;
	}
	return rec->effects != 0;
}
