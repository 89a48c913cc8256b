/* webhooks.h -- webhook endpoints (Stripe's /v1/webhook_endpoints) and the queue that
 * delivers events to them.
 *
 * Every event the billing engine records is queued, in the same transaction, for each enabled
 * endpoint of its scope whose enabled_events take it: an event is never recorded without its
 * deliveries, nor delivered without being recorded. A sender at the edge (http/webhook_sender.c)
 * takes due deliveries, posts them, and settles each: delivered ones leave the queue, failed
 * ones come back after the retry schedule's next delay, and after the last one they are
 * dropped (logged). Taking a delivery counts an attempt and leases it (its due time moves
 * TG_WEBHOOK_LEASE ahead), so a sender that dies mid-post leaves it to be sent again, within
 * the schedule's attempts: delivery is at least once, and receivers tell repeats apart by the
 * event id, as with Stripe.
 */
#ifndef TG_WEBHOOKS_H
#define TG_WEBHOOKS_H

#include <stdbool.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/err.h"
#include "core/billing.h"
#include "core/model.h"
#include "core/store.h"

#define TG_WEBHOOK_ENDPOINTS_MAX 16 /* per account and mode, as Stripe allows */
#define TG_WEBHOOK_URL_MAX 2048
#define TG_WEBHOOK_EVENTS_MAX 256   /* enabled_events entries (a request's array holds no more) */
#define TG_WEBHOOK_LEASE 60         /* seconds a taken delivery is kept from other takes (a
                                     * minute of the retry schedule: scaled with its unit) */
#define TG_WEBHOOK_RETRY_UNIT 60    /* seconds in a unit of the retry schedule (default) */

typedef struct tg_webhook_endpoint {
    char id[TG_ID_MAX];
    int64_t created;
    bool livemode;
    bool disabled;
    const char *url;
    const char *description;    /* NULL: none */
    const char *enabled_events; /* the types, each followed by one space ("*" takes all) */
    char secret[TG_ID_MAX];     /* whsec_…: shown once, by the create */
    const char *api_version;    /* as the create gave it (only Tollgate's one); NULL: none */
    tg_metadata metadata;
} tg_webhook_endpoint;

/* What a create or an update sets: NULL / unset / -1 / 0 entries leave a field as it is. */
typedef struct tg_webhook_patch {
    const char *url;
    tg_opt_str description;
    const char *const *events; /* enabled_events */
    size_t nevents;
    int disabled;               /* -1: unchanged */
    bool metadata_clear;
    tg_metadata metadata;
    const char *api_version;    /* the create's */
} tg_webhook_patch;

/* The event types Tollgate records and sends. */
bool tg_webhook_event_type_known(const char *type);
/* What enabled_events takes: "*" or any of Stripe's event types (those Tollgate never sends
 * are accepted as Stripe accepts them, and never sent). */
bool tg_webhook_event_type_valid(const char *type);

int tg_webhook_endpoint_create(tg_service *svc, const tg_scope *scope, const tg_webhook_patch *p,
                               tg_arena *a, tg_webhook_endpoint *out, tg_err *err);
int tg_webhook_endpoint_update(tg_service *svc, const tg_scope *scope, const char *id,
                               const tg_webhook_patch *p, tg_arena *a, tg_webhook_endpoint *out,
                               tg_err *err);
int tg_webhook_endpoint_retrieve(tg_service *svc, const tg_scope *scope, const char *id,
                                 tg_arena *a, tg_webhook_endpoint *out, tg_err *err);
int tg_webhook_endpoint_list(tg_service *svc, const tg_scope *scope, const tg_page *page,
                             tg_arena *a, tg_webhook_endpoint **out, size_t *n, bool *has_more,
                             tg_err *err);
/* Deletes the endpoint and drops its queued deliveries. */
int tg_webhook_endpoint_delete(tg_service *svc, const tg_scope *scope, const char *id,
                               tg_err *err);

/* ---- delivery ---- */

/* One delivery to attempt: the queue's row, its endpoint and its event. */
typedef struct tg_webhook_attempt {
    tg_delivery delivery;
    tg_webhook_endpoint endpoint;
    tg_billing_event event;
} tg_webhook_attempt;

/* Takes up to `limit` deliveries due now and leases them (one writer job). Deliveries whose
 * endpoint is gone or disabled, or whose event is gone, leave the queue instead. */
int tg_webhook_take(tg_service *svc, int limit, tg_arena *a, tg_webhook_attempt **out,
                    size_t *n, tg_err *err);

/* Settles n attempts (one writer job): TG_WEBHOOK_DELIVERED drops attempt i from the queue,
 * TG_WEBHOOK_FAILED moves it to its next retry (or drops it when the schedule is over), and
 * TG_WEBHOOK_UNSETTLED leaves it to its lease. */
enum { TG_WEBHOOK_UNSETTLED = -1, TG_WEBHOOK_FAILED = 0, TG_WEBHOOK_DELIVERED = 1 };
int tg_webhook_settle(tg_service *svc, const tg_webhook_attempt *at, size_t n,
                      const int *outcome, tg_err *err);

/* The retry schedule: after `attempts` failed attempts, the delay before the next one, in
 * units (TG_WEBHOOK_RETRY_UNIT seconds by default), or -1 when there is none. Live mode
 * retries for about three days, test mode three times (Stripe's rules). */
int64_t tg_webhook_retry_units(int attempts, bool livemode);

/* The sender's wake-up: a job that queued deliveries nudges after its commit; the sender
 * waits for a nudge newer than *seen, or ms milliseconds. */
void tg_webhooks_nudge(tg_service *svc);
void tg_webhooks_wait(tg_service *svc, uint64_t *seen, int ms);

#endif
