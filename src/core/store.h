/* store.h -- the storage port.
 *
 * A tg_store is one connection to durable storage with its own prepared statements; it is used
 * by one thread at a time. The service opens one for the writer thread (every write goes
 * through it, batched into group-commit transactions) and a pool for readers. Adapters embed
 * `tg_store` first and fill in `ops`: store/sqlite.c is the embedded default.
 *
 * Conventions: every op returns TG_OK or a TG_E* code with detail in err; "not found" is
 * TG_ENOTFOUND. Strings of returned objects are allocated in the arena passed in. List ops
 * return at most page->limit + 1 rows, newest first, so the caller can tell has_more; a cursor
 * id that does not exist in scope is TG_ENOTFOUND naming the cursor parameter.
 */
#ifndef TG_STORE_H
#define TG_STORE_H

#include "base/arena.h"
#include "base/err.h"
#include "core/model.h"

typedef struct tg_store tg_store;

/* One stored billing object. Index columns are NULL when they do not apply. */
typedef struct tg_obj {
    tg_scope scope; /* filled by reads */
    const char *kind;
    char id[TG_ID_MAX];
    int64_t created;
    const char *customer, *parent, *lookup, *clock;
    const char *tags; /* " name=value name=value " words other filters match (NULL: none) */
    bool active;
    int64_t due; /* when the scheduler must look at it next; 0 = never */
    const void *body;
    size_t len;
    int64_t seq; /* its row number (filled by reads): later rows are newer */
} tg_obj;

/* List filters: NULL fields and active -1 match anything; lookup_any matches any of n keys
 * (at most TG_OBJ_LOOKUP_MAX). */
#define TG_OBJ_LOOKUP_MAX 20
typedef struct tg_obj_filter {
    const char *customer, *parent, *clock;
    bool no_clock;          /* only objects on no test clock */
    int active;
    const char *const *lookup_any;
    size_t nlookup;
    const char *lookup_prefix; /* lookup LIKE 'prefix%' */
    const char *lookup_min, *lookup_max; /* lookup_min <= lookup <= lookup_max, in text order
                                          * (both set, or neither) */
    const char *const *tags;   /* every one of these " name=value " words is in tags */
    size_t ntags;
    const char *without_tag;   /* this word is not in tags (NULL: no such condition) */
    tg_time_range created;
} tg_obj_filter;

/* One spilled row of live usage (see spill_put below). */
typedef struct tg_spill {
    int shard;
    int64_t meter_seq, customer_seq, seq;
    int64_t through_block, through_cancel; /* the marks: what the spill includes */
    const void *data;                      /* a delta run; NULL when only marks were read */
    size_t len;
} tg_spill;

/* One queued delivery of an event to a webhook endpoint (see delivery_add below). */
typedef struct tg_delivery {
    tg_scope scope; /* filled by reads */
    int64_t seq;    /* assigned by delivery_add */
    char endpoint[TG_ID_MAX], event[TG_ID_MAX];
    int attempts;    /* attempts made so far */
    int64_t created; /* when it was queued */
    int64_t due;     /* when the next attempt may start */
} tg_delivery;

typedef struct tg_store_ops {
    const char *name;
    void (*close)(tg_store *s);

    /* Transactions. Savepoints nest inside a transaction so one job of a batch can fail
     * without undoing the others. read_begin starts a transaction that only reads (a reader's,
     * so that several reads see one state), ended by rollback. */
    int (*begin)(tg_store *s, tg_err *err);
    int (*read_begin)(tg_store *s, tg_err *err);
    int (*commit)(tg_store *s, tg_err *err);
    void (*rollback)(tg_store *s);
    int (*savepoint)(tg_store *s, tg_err *err);
    int (*release)(tg_store *s, tg_err *err);
    void (*rollback_to)(tg_store *s);

    /* Settings: small named strings (the account id). OUT: value (arena). */
    int (*setting_get)(tg_store *s, const char *name, tg_arena *a, char **value, tg_err *err);
    int (*setting_put)(tg_store *s, const char *name, const char *value, tg_err *err);

    /* API keys, stored by the SHA-256 of the secret. */
    int (*key_insert)(tg_store *s, const char *hash, const tg_scope *scope, const char *prefix,
                      int64_t created, tg_err *err);
    int (*key_lookup)(tg_store *s, const char *hash, tg_scope *scope_out, tg_err *err);
    /* Marks an active key revoked (at `now`); TG_ENOTFOUND when no active key has the hash. */
    int (*key_revoke)(tg_store *s, const char *hash, int64_t now, tg_err *err);

    /* Customers. customer_put inserts (setting c->seq) or replaces the whole row. */
    int (*customer_put)(tg_store *s, const tg_scope *scope, tg_customer *c, tg_err *err);
    int (*customer_get)(tg_store *s, const tg_scope *scope, const char *id, tg_arena *a,
                        tg_customer *out, tg_err *err);
    int (*customer_list)(tg_store *s, const tg_scope *scope, const tg_customer_filter *f,
                         const tg_page *page, tg_arena *a, tg_customer **out, size_t *n,
                         tg_err *err);

    /* Calls fn for every customer of every scope (start-up registry load). */
    int (*customer_each)(tg_store *s,
                         int (*fn)(void *ctx, const tg_scope *scope, int64_t seq, const char *id,
                                   bool deleted, const char *test_clock),
                         void *ctx, tg_err *err);

    /* Meters. meter_put inserts (setting m->seq) or replaces. status: -1 any, 0 inactive,
     * 1 active. */
    int (*meter_put)(tg_store *s, const tg_scope *scope, tg_meter *m, tg_err *err);
    int (*meter_get)(tg_store *s, const tg_scope *scope, const char *id, tg_meter *out,
                     tg_err *err);
    int (*meter_list)(tg_store *s, const tg_scope *scope, int status, const tg_page *page,
                      tg_arena *a, tg_meter **out, size_t *n, tg_err *err);
    /* Calls fn for every meter of every scope (start-up registry load). */
    int (*meter_each)(tg_store *s, int (*fn)(void *ctx, const tg_scope *scope, const tg_meter *m),
                      void *ctx, tg_err *err);

    /* Row-stored events (meters with formula last or an event_time_window; see writer.c).
     * event_insert sets *dup (and writes nothing) when the identifier exists in scope, else
     * stores the event and sets e->seq. */
    int (*event_insert)(tg_store *s, const tg_scope *scope, tg_event *e, bool *dup, tg_err *err);
    int (*event_get)(tg_store *s, const tg_scope *scope, const char *identifier, tg_arena *a,
                     tg_event *out, tg_err *err);
    /* Moves event seq from state `from` to `to`; *changed tells whether it was in `from`. */
    int (*event_set_state)(tg_store *s, const tg_scope *scope, int64_t seq, tg_event_state from,
                           tg_event_state to, bool *changed, tg_err *err);
    /* Calls fn with the scope and identifier of every row-stored event (start-up). */
    int (*event_each_identifier)(tg_store *s,
                                 int (*fn)(void *ctx, const tg_scope *scope,
                                           const char *identifier),
                                 void *ctx, tg_err *err);
    /* Counted row-stored events of (meter, customer) with from <= timestamp < to. */
    int (*event_each_in_range)(tg_store *s, int64_t meter_seq, int64_t customer_seq, int64_t from,
                               int64_t to,
                               int (*fn)(void *ctx, int64_t ts, int64_t seq, tg_dec value),
                               void *ctx, tg_err *err);

    /* Event blocks (the events of additive meters, a batch a row; core/eventblock.h).
     * block_append sets *seq; block_each visits blocks with seq > after in order. */
    int (*block_append)(tg_store *s, const tg_scope *scope, int64_t created, size_t count,
                        const void *data, size_t len, int64_t *seq, tg_err *err);
    int (*block_get)(tg_store *s, int64_t seq, tg_arena *a, tg_scope *scope, int64_t *created,
                     const void **data, size_t *len, tg_err *err);
    int (*block_each)(tg_store *s, int64_t after,
                      int (*fn)(void *ctx, int64_t seq, const tg_scope *scope, int64_t created,
                                const void *data, size_t len),
                      void *ctx, tg_err *err);

    /* Cancellations of block-stored events, by (block, index in block). cancel_put sets *id
     * (increasing) or *dup when already canceled; cancel_each visits ids > after in order. */
    int (*cancel_put)(tg_store *s, int64_t block, int64_t index, int64_t created, int64_t *id,
                      bool *dup, tg_err *err);
    int (*cancel_each)(tg_store *s, int64_t after,
                       int (*fn)(void *ctx, int64_t id, int64_t block, int64_t index),
                       void *ctx, tg_err *err);

    /* Minute buckets by (meter, customer) row numbers. bucket_get: TG_ENOTFOUND when absent
     * (not recorded in err). bucket_put with count 0 deletes. */
    int (*bucket_get)(tg_store *s, int64_t meter_seq, int64_t customer_seq, int64_t minute,
                      tg_bucket *out, tg_err *err);
    int (*bucket_put)(tg_store *s, int64_t meter_seq, int64_t customer_seq, const tg_bucket *b,
                      tg_err *err);
    /* Buckets with from <= minute < to, newest first. */
    int (*bucket_each)(tg_store *s, int64_t meter_seq, int64_t customer_seq, int64_t from,
                       int64_t to, int (*fn)(void *ctx, const tg_bucket *b), void *ctx,
                       tg_err *err);

    /* Day pages of additive meters (core/daypage.h): one row per (meter, customer, UTC day),
     * with the last block and cancellation whose effect it includes (its marks).
     * day_get: TG_ENOTFOUND when absent (not recorded in err), data in a. day_put with len 0
     * deletes. day_each visits days with from_day <= day < to_day, newest first, until fn
     * returns non-zero (returned); day_marks_each visits every page's marks (start-up replay). */
    int (*day_get)(tg_store *s, int64_t meter_seq, int64_t customer_seq, int64_t day,
                   tg_arena *a, const void **data, size_t *len, tg_err *err);
    int (*day_put)(tg_store *s, int64_t meter_seq, int64_t customer_seq, int64_t day,
                   const void *data, size_t len, int64_t through_block, int64_t through_cancel,
                   tg_err *err);
    int (*day_marks_each)(tg_store *s,
                          int (*fn)(void *ctx, int64_t meter_seq, int64_t customer_seq,
                                    int64_t day, int64_t through_block, int64_t through_cancel),
                          void *ctx, tg_err *err);
    int (*day_each)(tg_store *s, int64_t meter_seq, int64_t customer_seq, int64_t from_day,
                    int64_t to_day,
                    int (*fn)(void *ctx, int64_t day, const void *data, size_t len), void *ctx,
                    tg_err *err);

    /* Spilled live usage (core/writer.c): between folds into day pages, a shard of the overlay
     * is written as one row per (meter, customer) holding that pair's deltas of any days
     * (core/daypage.h's delta runs), with the marks of the spill. A row's key is (shard,
     * meter, customer, seq); the shard is core/overlay.h's tg_overlay_shard of the pair, so a
     * fold finds a shard's rows in one range. spill_each visits, in key order: with
     * meter_seq >= 0 the rows of that pair, else with shard >= 0 every row of the shard, else
     * every row with data NULL (the marks, for start-up replay); it stops at fn's first
     * non-zero return, which it returns. spill_delete_shard deletes a shard's rows. */
    int (*spill_put)(tg_store *s, const tg_spill *row, tg_err *err);
    int (*spill_each)(tg_store *s, int shard, int64_t meter_seq, int64_t customer_seq,
                      int (*fn)(void *ctx, const tg_spill *row), void *ctx, tg_err *err);
    int (*spill_delete_shard)(tg_store *s, int shard, tg_err *err);

    /* The surviving event of a pre-aggregation window (event_time_window meters). */
    int (*window_get)(tg_store *s, int64_t meter_seq, int64_t customer_seq, int64_t window_start,
                      int64_t *seq_out, int64_t *ts_out, tg_err *err);
    int (*window_put)(tg_store *s, int64_t meter_seq, int64_t customer_seq, int64_t window_start,
                      int64_t seq, int64_t ts, tg_err *err);

    /* Idempotency records. */
    int (*idem_get)(tg_store *s, const tg_scope *scope, const char *key, tg_arena *a,
                    tg_idem *out, tg_err *err);
    int (*idem_put)(tg_store *s, const tg_scope *scope, const char *key, const tg_idem *rec,
                    tg_err *err);

    /* Meter event sessions, by the SHA-256 of the token. session_get finds no session whose
     * key (ses->key_hash, when known) is revoked. */
    int (*session_put)(tg_store *s, const tg_scope *scope, const char *token_hash,
                       const tg_session *ses, tg_err *err);
    int (*session_get)(tg_store *s, const char *token_hash, tg_scope *scope_out,
                       int64_t *expires_out, tg_err *err);

    /* Asynchronous validation error counts. */
    int (*meter_error_add)(tg_store *s, const tg_scope *scope, const tg_meter_error *e,
                           tg_err *err);
    int (*meter_error_list)(tg_store *s, const tg_scope *scope, const char *meter_id,
                            const tg_page *page, tg_arena *a, tg_meter_error **out, size_t *n,
                            tg_err *err);

    /* Billing objects (core/billing.c): a record blob plus the columns lists filter on.
     * obj_put inserts or replaces by (scope, kind, id), keeping the row's list position.
     * obj_get: TG_ENOTFOUND when absent (not recorded in err). obj_list: newest first, like
     * every list, filtered. obj_due: objects with 0 < due <= before, earliest due first,
     * across scopes when clock is NULL (objects on no clock) or of one test clock. */
    int (*obj_put)(tg_store *s, const tg_scope *scope, const tg_obj *o, tg_err *err);
    int (*obj_get)(tg_store *s, const tg_scope *scope, const char *kind, const char *id,
                   tg_arena *a, tg_obj *out, tg_err *err);
    int (*obj_list)(tg_store *s, const tg_scope *scope, const char *kind, const tg_obj_filter *f,
                    const tg_page *page, tg_arena *a, tg_obj **out, size_t *n, tg_err *err);
    int (*obj_delete)(tg_store *s, const tg_scope *scope, const char *kind, const char *id,
                      tg_err *err);
    int (*obj_due)(tg_store *s, const char *clock, int64_t before, int limit, tg_arena *a,
                   tg_obj **out, size_t *n, tg_err *err);

    /* Webhook deliveries (core/webhooks.c): a queue across scopes. delivery_due: those with
     * due <= before, earliest first (then in order of queueing), at most limit.
     * delivery_set moves one (attempts, due); delivery_delete drops one (or, with endpoint
     * set, every one of that endpoint in scope when seq is 0); delivery_count: how many an
     * event has queued. */
    int (*delivery_add)(tg_store *s, const tg_scope *scope, tg_delivery *d, tg_err *err);
    int (*delivery_due)(tg_store *s, int64_t before, int limit, tg_arena *a, tg_delivery **out,
                        size_t *n, tg_err *err);
    int (*delivery_set)(tg_store *s, int64_t seq, int attempts, int64_t due, tg_err *err);
    int (*delivery_delete)(tg_store *s, const tg_scope *scope, int64_t seq,
                           const char *endpoint, tg_err *err);
    int (*delivery_count)(tg_store *s, const tg_scope *scope, const char *event, int *n,
                          tg_err *err);

    /* Deletes idempotency records and sessions created before `before`. */
    int (*prune)(tg_store *s, int64_t idem_before, int64_t session_before, tg_err *err);
} tg_store_ops;

struct tg_store {
    const tg_store_ops *ops;
};

/* Opens one more connection to the same storage; used by the service for the writer and the
 * reader pool. A reader connection answers one request at a time and may keep a smaller cache
 * than the writer's. */
typedef struct tg_store_factory {
    int (*open)(void *arg, bool reader, tg_store **out, tg_err *err);
    void *arg;
} tg_store_factory;

#endif
