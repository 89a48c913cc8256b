/* service.h -- Tollgate's use cases: what the HTTP server and the CLI call.
 *
 * The service owns the writer thread, a pool of reading store connections and the in-memory
 * meter registry (meters by event name, for validating events without a read). Functions take
 * the caller's scope (account and mode, from the API key) and never cross it. Results that hold
 * strings are allocated in the caller's arena. Every function returns TG_OK or a TG_E* code with
 * detail in err; a failed write changes nothing.
 */
#ifndef TG_SERVICE_H
#define TG_SERVICE_H

#include <stddef.h>

#include "base/arena.h"
#include "base/err.h"
#include "core/clock.h"
#include "core/model.h"
#include "core/store.h"

typedef struct tg_service tg_service;

typedef struct tg_service_config {
    size_t queue_max_events; /* writer backlog before 429 (default 200000) */
    size_t batch_max_events; /* events per transaction (default 10000) */
    int readers;             /* reading connections (default 8) */
    bool no_billing_scheduler; /* the CLI runs due billing itself (`tollgate bill run`) */
    /* The backlog is also bounded by the memory its events hold (the event records and their
     * payload text), default 256 MiB: events with large payloads (up to the request body
     * limit each) would otherwise hold up to queue_max_events of them. */
    size_t queue_max_bytes;
    /* How often live usage is folded into storage, about (default 10 s): each busy (meter,
     * customer) is written once per interval, and a restart replays at most that much. */
    int fold_interval_ms;
    /* Keep the writer at the process's priority (core/writer.c, "Priority"). */
    bool no_priority_boost;
    /* Days an identifier is refused as a duplicate after its event was received, at least
     * (core/writer.c, "Identifier retention"): below TG_IDENTIFIER_DAYS (36; 0 among them)
     * means 36, a negative value for as long as the event is stored. */
    int identifier_days;
    /* Seconds in a unit of the webhook retry schedule (core/webhooks.c), default 60: tests
     * run the schedule in seconds. */
    int webhook_retry_unit;
} tg_service_config;

int tg_service_open(tg_service **out, tg_store_factory factory, const tg_clock *clock,
                    const tg_service_config *cfg, tg_err *err);

/* Drains the writer and closes everything. NULL is a no-op. */
void tg_service_close(tg_service *svc);

int64_t tg_service_now(const tg_service *svc);

/* ---- keys ---- */

/* Creates a secret key (sk_test_… or sk_live_…) for the service's account; writes it to
 * secret (size >= TG_ID_MAX). Only its SHA-256 is stored. */
int tg_key_create(tg_service *svc, bool live, char *secret, tg_err *err);

/* The same without a running service (the CLI): opens one store connection, creates the
 * account on a new data directory, stores the key. Does not load events, so it is instant on
 * any data directory. */
int tg_key_create_offline(tg_store_factory factory, const tg_clock *clock, bool live,
                          char *secret, tg_err *err);

/* Revokes a secret key (the CLI; safe while a server runs on the same data directory).
 * TG_ENOTFOUND when no active key is that secret. */
int tg_key_revoke_offline(tg_store_factory factory, const tg_clock *clock, const char *secret,
                          tg_err *err);

/* Resolves a secret key to its scope. TG_EAUTHINVALID when unknown or revoked. A resolved key
 * is cached for TG_KEY_RECHECK_S seconds and then looked up again, so a key revoked while the
 * server runs stops working within that; callers that cache it too (the HTTP layer, per
 * connection) hold it no longer. */
#define TG_KEY_RECHECK_S 1
int tg_key_authenticate(tg_service *svc, const char *secret, tg_scope *scope, tg_err *err);

/* ---- customers ---- */

int tg_customer_create(tg_service *svc, const tg_scope *scope, const tg_customer_patch *p,
                       tg_arena *a, tg_customer *out, tg_err *err);
int tg_customer_retrieve(tg_service *svc, const tg_scope *scope, const char *id, tg_arena *a,
                         tg_customer *out, tg_err *err);
int tg_customer_update(tg_service *svc, const tg_scope *scope, const char *id,
                       const tg_customer_patch *p, tg_arena *a, tg_customer *out, tg_err *err);
int tg_customer_delete(tg_service *svc, const tg_scope *scope, const char *id, tg_err *err);
int tg_customer_list(tg_service *svc, const tg_scope *scope, const tg_customer_filter *f,
                     const tg_page *page, tg_arena *a, tg_customer **out, size_t *n,
                     bool *has_more, tg_err *err);

/* ---- meters ---- */

/* spec carries display_name, event_name, formula, customer_key, value_key and
 * event_time_window; the rest is filled in. TG_EEXISTS when an active meter has the name. */
int tg_meter_create(tg_service *svc, const tg_scope *scope, const tg_meter *spec, tg_meter *out,
                    tg_err *err);
int tg_meter_retrieve(tg_service *svc, const tg_scope *scope, const char *id, tg_meter *out,
                      tg_err *err);
/* display_name NULL leaves it unchanged. */
int tg_meter_update(tg_service *svc, const tg_scope *scope, const char *id,
                    const char *display_name, tg_meter *out, tg_err *err);
int tg_meter_set_active(tg_service *svc, const tg_scope *scope, const char *id, bool active,
                        tg_meter *out, tg_err *err);
/* status: -1 any, 0 inactive, 1 active. */
int tg_meter_list(tg_service *svc, const tg_scope *scope, int status, const tg_page *page,
                  tg_arena *a, tg_meter **out, size_t *n, bool *has_more, tg_err *err);

/* ---- meter events ---- */

/* The meters one request has looked up, so that a batch's events, which name a few meters,
 * look each one up once (and the request sees one state of each). Zero-initialise one per
 * request; later names are looked up each time. */
typedef struct tg_meter_memo {
    size_t n;
    struct tg_meter_memo_item {
        bool found, inactive;
        tg_meter m; /* only event_name when not found */
    } items[4];
} tg_meter_memo;

/* Validates one event synchronously: names, meter by event name (active), customer existence,
 * value, timestamp. e must carry event_name, identifier ("" = generate one), timestamp
 * (TG_TIME_NOW = the customer's current time: its test clock's when it has one) and payload;
 * on success the meter, customer and value are filled in. memo may be NULL. */
int tg_event_prepare(tg_service *svc, const tg_scope *scope, tg_event *e, tg_meter_memo *memo,
                     tg_err *err);

/* Starts the memory loads tg_event_prepare(e) will wait for: the customer registry is larger
 * than the caches, so each event's lookup missed them. A request with many events calls it a
 * few events ahead of tg_event_prepare, with the same scope and memo, and the payload left as
 * it was; it only computes the customer's hash into e and prefetches, so results are the same
 * with or without it. */
void tg_event_prefetch(tg_service *svc, const tg_scope *scope, tg_event *e,
                       tg_meter_memo *memo);

/* Records prepared events durably (group commit) and fills results[i] with TG_OK or
 * TG_EDUPLICATE. errors (may be NULL) are refusal counts written in the same transaction;
 * when errors is not NULL (asynchronous validation, the v2 stream), duplicates are counted
 * there too, as `duplicate_meter_event`.
 * Returns TG_OK once committed, TG_EBUSY when the writer is saturated. */
int tg_events_record(tg_service *svc, const tg_scope *scope, tg_event *events, size_t n,
                     int *results, const tg_meter_error *errors, size_t nerrors, tg_err *err);

/* The asynchronous form of tg_events_record, for an event-driven transport: queues the events
 * and returns at once (TG_EBUSY when the writer is saturated). done(arg, rc) is called from
 * the writer thread once they are committed (rc TG_OK, results filled) or failed; it must not
 * block. The events, results, errors and handle must stay valid until then. */
typedef struct tg_record_handle {
    _Alignas(max_align_t) unsigned char opaque[1024];
} tg_record_handle;
int tg_events_submit(tg_service *svc, const tg_scope *scope, tg_event *events, size_t n,
                     int *results, const tg_meter_error *errors, size_t nerrors,
                     tg_record_handle *handle, void (*done)(void *arg, int rc), void *arg,
                     tg_err *err);

/* After done(): the error of a failed submission (for the response). */
void tg_events_submit_error(const tg_record_handle *handle, tg_err *err);

/* Cancels the event with this identifier (received in the last 24 hours). */
int tg_event_cancel(tg_service *svc, const tg_scope *scope, const char *event_name,
                    const char *identifier, tg_err *err);

/* Event summaries of meter_id for customer over [start, end), grouped by window
 * (TG_WINDOW_NONE: one summary for the whole range). Newest first; cursors are window starts
 * (0 = none): after_start returns windows older than it, before_start newer ones. Windows
 * without events are omitted when grouping. */
int tg_summary_list(tg_service *svc, const tg_scope *scope, const char *meter_id,
                    const char *customer_id, int64_t start, int64_t end, tg_window grouping,
                    int limit, int64_t after_start, int64_t before_start, tg_arena *a,
                    tg_summary **out, size_t *n, bool *has_more, tg_err *err);

/* ---- meter event sessions (v2 stream) ---- */

/* Makes a session for the secret key `key` (NULL: not tied to a key); it ends with the key's
 * revocation. */
int tg_session_create(tg_service *svc, const tg_scope *scope, const char *key, tg_session *out,
                      tg_err *err);
/* Resolves a stream token; TG_ESESSION when unknown, expired or its key revoked. */
int tg_session_authenticate(tg_service *svc, const char *token, tg_scope *scope, tg_err *err);

int tg_meter_error_list(tg_service *svc, const tg_scope *scope, const char *meter_id,
                        const tg_page *page, tg_arena *a, tg_meter_error **out, size_t *n,
                        bool *has_more, tg_err *err);

/* ---- idempotency ---- */

/* Claims key for a request whose parameters hash to request_hash. Returns:
 *   TG_OK with *replay false: the caller runs the request, then calls tg_idem_finish;
 *   TG_OK with *replay true: a stored response is in *stored (body in a); or, when
 *     stored->status is TG_IDEM_COMMITTED, the writes of an earlier run under the key committed
 *     but its response was never stored (the server stopped in between): stored->body is the
 *     id of the object it created ("" if none), and the claim is held, so the caller answers
 *     without running the writes again and then calls tg_idem_finish;
 *   TG_EIDEMMISMATCH: the key was used with other parameters;
 *   TG_EIDEMBUSY: a request with this key is still running. */
int tg_idem_claim(tg_service *svc, const tg_scope *scope, const char *key,
                  const char *request_hash, tg_arena *a, bool *replay, tg_idem *stored,
                  tg_err *err);

/* A request running under a claimed key. While it is bound to the calling thread, every write
 * the thread makes (tg_service_write and the service's own) stores, in the same transaction,
 * a TG_IDEM_COMMITTED record under the key: a response stored later replaces it, and if the
 * server stops first, tg_idem_claim reports that the writes are done. The first id of kind
 * created_prefix ("cus_") that the writes create is noted in `created` and kept in the record,
 * so a retry can be answered with that object. Event jobs carry no record: meter events under
 * a key derive their identifiers from it instead. */
#define TG_IDEM_COMMITTED 0 /* stored status: the writes committed, the response is not known */
typedef struct tg_idem_mark {
    const char *request_id; /* the request's, for the events its writes record */
    bool keyed;             /* under a claimed key: the fields below are set, records kept */
    tg_scope scope;
    char key[256];
    char request_hash[65];
    const char *created_prefix; /* NULL: note nothing */
    char created[TG_ID_MAX];
} tg_idem_mark;

/* Binds m to the calling thread (NULL unbinds); m must outlive the binding. A request that
 * is not keyed binds one too, so that the events its writes record name it. */
void tg_idem_bind(tg_idem_mark *m);

/* The request bound to the calling thread (on the writer: whose job runs): its id and its
 * idempotency key, NULL when none. */
void tg_bound_request(const char **request_id, const char **idempotency_key);

/* Notes a newly made object id in the bound mark, if it is the first of the mark's kind. The
 * writer calls it for the jobs it runs on a bound request's behalf. */
void tg_idem_note_id(const char *id);

/* The same for an id the caller chose (a product's `id`), which has no kind's prefix: noted
 * if the bound request makes an object and none is noted yet. */
void tg_idem_note_chosen_id(const char *id);

/* Stores the response of a claimed key (durably, in the background) and releases the claim.
 * store=false releases without storing (the request failed validation). */
void tg_idem_finish(tg_service *svc, const tg_scope *scope, const char *key,
                    const char *request_hash, int status, const char *body, size_t body_len,
                    bool store);

#endif
