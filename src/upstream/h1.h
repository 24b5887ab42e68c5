/* h1.h - internal to src/upstream: the native HTTP/1.1 client that serves
 * tg_upcall for plain http:// URLs (h1.c), and the intrusive list both
 * implementations use.
 *
 * upstream.c owns the public API and dispatches: a call whose first byte is
 * nonzero (TG_UPCALL_NATIVE) is one of h1.c's, anything else is libcurl's. */
#ifndef TG_UPSTREAM_H1_H
#define TG_UPSTREAM_H1_H

#include <stddef.h>

#include "upstream/upstream.h"

/* ---- intrusive circular lists (a head is its own sentinel) ------------- */

typedef struct tg_link {
    struct tg_link *prev, *next;
} tg_link_t;

#define tg_container_of(p, T, m) ((T *)((char *)(p)-offsetof(T, m)))

static inline void tg_link_init(tg_link_t *l)
{
    l->prev = l->next = l;
}

static inline int tg_link_empty(const tg_link_t *l)
{
    return l->next == l;
}

static inline void tg_link_insert_after(tg_link_t *at, tg_link_t *l)
{
    l->prev = at;
    l->next = at->next;
    at->next->prev = l;
    at->next = l;
}

static inline void tg_link_push(tg_link_t *head, tg_link_t *l)
{
    tg_link_insert_after(head->prev, l);
}

/* Safe on an unlinked node (it points to itself). */
static inline void tg_link_del(tg_link_t *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    tg_link_init(l);
}

/* Moves every node of from onto the empty list to (from ends empty). */
static inline void tg_link_take(tg_link_t *to, tg_link_t *from)
{
    tg_link_init(to);
    if (tg_link_empty(from)) return;
    *to = *from;
    to->next->prev = to;
    to->prev->next = to;
    tg_link_init(from);
}

/* ---- the native client -------------------------------------------------- */

typedef struct tg_h1 tg_h1_t;

/* The first byte of every call: 0 for libcurl's, 1 for h1.c's. */
#define TG_UPCALL_NATIVE(c) (*(const unsigned char *)(c))

int tg_h1_create(tg_h1_t **out, uv_loop_t *loop);
/* Like tg_upstream_destroy: no callback after it; handles close on the loop. */
void tg_h1_destroy(tg_h1_t *h);
/* Host name lookups started so far (a name's addresses are reused for
 * ADDR_CACHE_MS, 30 s, after one). */
unsigned long tg_h1_lookups(const tg_h1_t *h);
/* Same contract as tg_upcall_start. Returns 1, having done nothing, when the
 * URL is not one the native client takes (not http://, or with userinfo). */
int tg_h1_start(tg_h1_t *h, const tg_upcall_opts_t *opts, const tg_upcall_cbs_t *cbs, void *ud,
                tg_upcall_t **out);
void tg_h1_pause(tg_upcall_t *c);
void tg_h1_resume(tg_upcall_t *c);
void tg_h1_cancel(tg_upcall_t *c);
uint64_t tg_h1_ttfb_us(const tg_upcall_t *c);

#endif
