/* api.h -- what the HTTP handlers share: the request, parameter getters that record Stripe
 * errors, and the route table type.
 *
 * A handler is three steps: read its parameters (each getter marks what it read and records
 * the first error in req->err), call the service, write the object. tg_req_params_done() is
 * called between the first two, so an unknown parameter is refused before anything is
 * written. Handlers return the HTTP status; on error they return tg_reply_error(req).
 */
#ifndef TG_HTTP_API_H
#define TG_HTTP_API_H

#include <stdbool.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/buf.h"
#include "base/err.h"
#include "core/model.h"
#include "core/service.h"
#include "http/expand.h"
#include "http/jsonw.h"
#include "http/params.h"

#define TG_MAX_SEGS 8

typedef struct tg_server_config {
    size_t max_body;          /* bytes; 413 beyond (default 1 MiB) */
    size_t max_stream_events; /* events per /v2/billing/meter_event_stream request */
    unsigned threads;         /* event-loop threads (default 2) */
    bool check_lane_realtime; /* run the check lane's thread at SCHED_FIFO priority 1 */
    unsigned request_timeout; /* seconds a request may take to arrive whole (default 30) */
    bool no_priority_boost;   /* keep the check lane at the process's priority (server.c) */
} tg_server_config;

/* A handler returns an HTTP status, or TG_HTTP_DEFERRED after tg_req_record_events: the
 * transport then parks the connection and calls the continuation when the events are
 * committed, without a thread waiting. */
#define TG_HTTP_DEFERRED 0

/* The Stripe API version whose object shapes Tollgate answers with (the Stripe-Version of a
 * response that asked for none, and every event's api_version). */
#define TG_STRIPE_VERSION "2026-07-29.dahlia"

typedef struct tg_req tg_req;
typedef int (*tg_continuation)(tg_req *req);

struct tg_req {
    tg_service *svc;
    const tg_server_config *cfg;
    tg_arena arena;
    const char *method;
    const char *path;
    const char *segs[TG_MAX_SEGS]; /* path segments; route params are read from here */
    int nsegs;
    tg_param *params;
    char *body;      /* the raw body, for a route that decodes it itself (TG_ROUTE_OWN_BODY) */
    size_t body_len;
    tg_scope scope;
    const char *key;      /* the secret key it authenticated with (NULL for a session token) */
    const char *idem_key; /* the request's Idempotency-Key once claimed, else NULL */
    tg_err err;
    tg_expand expand; /* expand[] of the request (p_expand, p_page) */
    /* response */
    tg_buf out;
    tg_jw jw; /* its ctx is the request */
    bool should_retry_header; /* send Stripe-Should-Retry: true */
    /* deferred recording (see tg_req_record_events) */
    tg_continuation resume;
    void *state;                         /* the handler's, for its continuation */
    tg_record_handle record;
    int record_rc;
    void (*park)(void *ctx);             /* set by the transport */
    void (*wake)(void *ctx, int rc);     /* set by the transport; any thread */
    void *transport_ctx;
};

typedef int (*tg_handler)(tg_req *req);


/* Route flags. */
enum {
    TG_ROUTE_SECRET = 1,  /* needs a secret key (sk_…) */
    TG_ROUTE_SESSION = 2, /* needs a meter event session token */
    TG_ROUTE_JSON = 4,    /* body is JSON (/v2) */
    TG_ROUTE_PUBLIC = 8,  /* no authentication (/healthz) */
    TG_ROUTE_RECORDS = 16, /* records meter events (parks): pipelined ones run together */
    TG_ROUTE_CHECK = 32,   /* an entitlement check: its connection moves to the check lane */
    TG_ROUTE_OWN_BODY = 64, /* the handler decodes the (JSON) body: params hold the query only,
                             * until it calls tg_req_parse_body */
    TG_ROUTE_REPEATABLE = 128, /* running it twice is harmless (a second meter event session):
                                * its writes under a key keep no record (see tg_idem_bind) */
};

typedef struct tg_route {
    const char *method;
    const char *pattern; /* "/v1/customers/:id" */
    tg_handler handler;
    int flags;
    /* POST routes that make an object: its id's prefix ("cus_"). A retry whose first run's
     * writes committed but whose response was lost is answered by the GET of pattern + "/" +
     * that id; for other POST routes, by the GET of the path up to its ":id" segment. */
    const char *creates;
} tg_route;

extern const tg_route tg_routes[];
extern const size_t tg_nroutes;
extern const tg_route tg_billing_routes[]; /* billing_routes.c */
extern const size_t tg_nbilling_routes;
extern const tg_route tg_entitlement_routes[]; /* entitlement_routes.c */
extern const size_t tg_nentitlement_routes;
extern const tg_route tg_webhook_routes[]; /* webhook_routes.c */
/* GET /v1/{customers,products,prices,subscriptions,invoices}/search (billing_routes.c); any
 * other /v1/X/search is an unknown URL, so that "search" is never taken for an object id. */
int tg_handle_search(tg_req *req);
extern const size_t tg_nwebhook_routes;

/* ---- parameters: each returns true when present and valid; on invalid input it records the
 * error in req->err and returns false. A missing optional parameter returns false with no
 * error. Names are full bracketed paths for error messages; lookups walk `parent`. */

/* A string; *out NULL when absent or given empty (""). max_len 0 = no limit. */
bool p_str(tg_req *req, tg_param *parent, const char *name, const char *path, size_t max_len,
           const char **out);
/* A required non-empty string. */
bool p_str_required(tg_req *req, tg_param *parent, const char *name, const char *path,
                    size_t max_len, const char **out);
/* An optional string patch: absent = not set; "" or null = set to NULL. */
bool p_opt_str(tg_req *req, tg_param *parent, const char *name, size_t max_len, tg_opt_str *out);
/* An integer in [min, max]. */
bool p_int(tg_req *req, tg_param *parent, const char *name, const char *path, int64_t min,
           int64_t max, int64_t *out);
/* One of a NULL-terminated list of words; *out is its index. */
bool p_enum(tg_req *req, tg_param *parent, const char *name, const char *path,
            const char *const *words, int *out);
/* A hash of strings (metadata, payload). *clear is set when the whole hash was given empty.
 * Values given empty become NULL (remove) when allow_remove, else stay "". */
bool p_string_map(tg_req *req, tg_param *parent, const char *name, bool allow_remove,
                  tg_metadata *out, bool *clear);
/* expand[] of a response that is an object of `type` (see expand.h); false, with the error
 * set, for a path that cannot be expanded. */
bool p_expand(tg_req *req, const char *type);
/* A time filter of a list: name (a time) or name[gt|gte|lt|lte], into *out. Other keys under
 * it are left unused (refused as unknown). p_created reads `created`. */
bool p_time_range(tg_req *req, const char *name, tg_time_range *out);
bool p_created(tg_req *req, tg_time_range *out);
/* limit, starting_after, ending_before, and expand[] of a list of `type`. */
bool p_page(tg_req *req, tg_page *out, const char *type);

/* Records events without blocking: parks the connection, queues the events, and returns
 * TG_HTTP_DEFERRED; `then` runs when they are committed (or failed) and writes the response.
 * In `then`, tg_req_record_failed() tells whether recording failed (req->err is then set).
 * events, results and errors must live in req->arena. */
int tg_req_record_events(tg_req *req, tg_event *events, size_t n, int *results,
                         const tg_meter_error *errors, size_t nerrors, tg_continuation then);
bool tg_req_record_failed(tg_req *req);

/* Refuses parameters no getter read; returns true when the request may proceed. */
bool tg_req_params_done(tg_req *req);

/* The meter event stream's events read the general way, from the body (req->body) as a
 * parameter tree: any body the fast path (stream_json.h) declines, so every refusal is named
 * here. False with req->err set. (routes.c; tests compare the two ways.) */
bool tg_stream_events_general(tg_req *req, tg_event **out, size_t *n);

/* A TG_ROUTE_OWN_BODY handler's general way: decodes req->body into req->params as the
 * transport does for other JSON routes. False with req->err set on a malformed body. */
bool tg_req_parse_body(tg_req *req);

/* True when an error has been recorded. */
static inline bool tg_req_failed(const tg_req *req)
{
    return req->err.code != TG_OK;
}

/* Writes req->err as a Stripe error object and returns its status. */
int tg_reply_error(tg_req *req);

/* Writes err as a Stripe error object into buf and returns its status (used before a request
 * exists and by the server for transport errors). */
int tg_render_error(const tg_err *err, tg_buf *buf, bool *should_retry);

/* The route segment at position i (e.g. the id in /v1/customers/:id). */
static inline const char *tg_seg(const tg_req *req, int i)
{
    return i < req->nsegs ? req->segs[i] : "";
}

/* Starts a list response {object:"list", url, has_more, data:[ … ]}: call jw_aend + jw_end
 * after writing the items. */
/* Expanders (expand.h) of objects other files' renderers name. */
bool tg_expand_test_clock(tg_req *req, const char *id);

/* A customer's contact map (model.h) as Stripe's address, phone and shipping, under the keys
 * given (an invoice's customer_address, customer_phone, customer_shipping). */
void tg_render_contact(tg_jw *w, const tg_metadata *contact, const char *address_key,
                       const char *phone_key, const char *shipping_key);

/* Writes Stripe's answer to a delete, {id, object, deleted: true}; returns 200. */
int tg_reply_deleted(tg_req *req, const char *id, const char *object);
void tg_list_begin(tg_req *req, const char *url);
void tg_list_end(tg_req *req, bool has_more);

/* ---- object writers (render.c) ---- */
void tg_render_customer(tg_jw *w, const tg_customer *c);
void tg_render_meter(tg_jw *w, const tg_meter *m);
void tg_render_dec(tg_jw *w, tg_dec d);
void tg_render_metadata(tg_jw *w, const tg_metadata *md);
/* entitlement_routes.c (events show them too) */
struct tg_feature;
struct tg_entitlement_summary;
void tg_render_feature(tg_jw *w, const struct tg_feature *f);
/* An event as GET /v1/events/{id} writes it, and as webhooks deliver it. */
struct tg_billing_event;
void tg_render_event(tg_jw *w, const struct tg_billing_event *e);
void tg_render_entitlement_summary(tg_jw *w, const struct tg_entitlement_summary *s,
                                   bool livemode);

#endif
