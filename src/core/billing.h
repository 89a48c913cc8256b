/* billing.h -- the billing domain: products, prices, test clocks, subscriptions, invoices and
 * the events they emit, and the use cases over them.
 *
 * Objects are plain structs whose strings live in the caller's arena. They are stored as
 * tagged records (core/record.h) in the store's object table, next to the few columns lists
 * filter on. All writes run as writer jobs, so every change (a subscription renewing and the
 * invoice it creates and the events both emit) commits in one transaction or not at all.
 *
 * Time: an object reads the clock of the customer it belongs to: a test clock's frozen time
 * when the customer is attached to one, else the server's clock. The engine (billing.c) is
 * driven by `due` times: a subscription is due at its next renewal, trial end or reminder, a
 * draft invoice at its automatic finalization. The scheduler thread runs what is due on the
 * real clock; advancing a test clock runs what is due on that clock, in time order.
 */
#ifndef TG_BILLING_H
#define TG_BILLING_H

#include <stdbool.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/err.h"
#include "core/calendar.h"
#include "core/entitlements.h"
#include "core/model.h"
#include "core/pricing.h"

typedef struct tg_service tg_service;

#define TG_SUB_ITEMS_MAX 20
#define TG_GRACE_DEFAULT 3600      /* drafts finalize an hour after they are created */
#define TG_GRACE_MAX (72 * 3600)
#define TG_TRIAL_REMINDER (3 * 86400) /* trial_will_end is sent 3 days before */

/* ---- catalog ---- */

typedef struct tg_product {
    char id[TG_ID_MAX];
    int64_t created, updated;
    bool livemode, active, deleted;
    const char *name, *description; /* description NULL = null */
    tg_metadata metadata;
} tg_product;

typedef struct tg_product_patch {
    const char *id;          /* create: a caller-chosen id, or NULL */
    tg_opt_str name, description;
    int active;              /* -1 leave, 0/1 */
    bool metadata_clear;
    tg_metadata metadata;
} tg_product_patch;

typedef struct tg_price {
    char id[TG_ID_MAX];
    char product[TG_ID_MAX];
    char currency[4];
    int64_t created;
    bool livemode, active;
    bool recurring; /* type recurring (else one_time) */
    tg_interval interval;
    int interval_count;
    bool metered; /* recurring.usage_type */
    char meter[TG_ID_MAX];
    int64_t trial_period_days; /* 0 = null */
    bool unit_amount_set;      /* per_unit: unit_amount_decimal is not null */
    tg_pricing pricing;        /* tiers in the arena */
    const char *lookup_key, *nickname; /* NULL = null */
    tg_metadata metadata;
} tg_price;

typedef struct tg_price_patch {
    int active; /* -1 leave */
    tg_opt_str lookup_key, nickname;
    bool transfer_lookup_key;
    bool metadata_clear;
    tg_metadata metadata;
} tg_price_patch;

/* Filters of GET /v1/products and /v1/prices. NULL / -1 = any. */
typedef struct tg_catalog_filter {
    int active;
    const char *product;    /* prices of this product */
    const char *currency;
    int recurring;          /* prices: type recurring (1) or one_time (0) */
    const char *const *lookup_keys; /* prices with one of these lookup keys */
    size_t nlookup_keys;
    tg_time_range created;
} tg_catalog_filter;

/* ---- test clocks ---- */

typedef enum { TG_CLOCK_READY, TG_CLOCK_ADVANCING } tg_clock_status;

typedef struct tg_test_clock {
    char id[TG_ID_MAX];
    int64_t created, frozen_time, deletes_after;
    const char *name;
    tg_clock_status status;
    bool deleted;
} tg_test_clock;

/* ---- subscriptions ---- */

typedef enum {
    TG_SUB_TRIALING, TG_SUB_ACTIVE, TG_SUB_PAST_DUE, TG_SUB_CANCELED, TG_SUB_PAUSED
} tg_sub_status;

typedef enum { TG_TRIAL_END_CREATE_INVOICE, TG_TRIAL_END_CANCEL, TG_TRIAL_END_PAUSE } tg_trial_end;
typedef enum { TG_PRORATE_CREATE, TG_PRORATE_NONE, TG_PRORATE_ALWAYS_INVOICE } tg_proration;

typedef struct tg_sub_item {
    char id[TG_ID_MAX];
    int64_t created;
    tg_price price;    /* a copy, refreshed from the catalog when read */
    int64_t quantity;  /* licensed prices */
    tg_metadata metadata;
    /* Metered prices: usage is billed from usage_from on; billed is what invoices have
     * charged so far, so usage that arrives late is carried into the next invoice. */
    int64_t usage_from;
    tg_dec billed;
} tg_sub_item;

/* A credit or charge waiting for the subscription's next invoice: a proration, or the usage
 * of a metered item removed mid-period. */
typedef struct tg_pending_line {
    bool proration;
    char price[TG_ID_MAX];
    char item[TG_ID_MAX];
    int64_t amount; /* minor units, rounded once */
    tg_dec quantity;
    int64_t period_start, period_end;
    const char *description;
} tg_pending_line;

/* The phase that starts at the next renewal (a subscription schedule's next phase). */
typedef struct tg_phase_item {
    char price[TG_ID_MAX];
    int64_t quantity; /* licensed prices */
} tg_phase_item;

typedef struct tg_sub_next_phase {
    bool set;
    int64_t start;
    size_t nitems;
    tg_phase_item items[TG_SUB_ITEMS_MAX];
} tg_sub_next_phase;

typedef struct tg_subscription {
    char id[TG_ID_MAX];
    char customer[TG_ID_MAX];
    char currency[4];
    char test_clock[TG_ID_MAX]; /* "" = none */
    char latest_invoice[TG_ID_MAX];
    char schedule[TG_ID_MAX];
    int64_t created, start_date;
    bool livemode;
    tg_sub_status status;
    tg_interval interval;
    int interval_count;
    int64_t billing_cycle_anchor;
    int anchor_day; /* billing_cycle_anchor_config[day_of_month], 0 = none */
    int anchor_month, anchor_hour, anchor_minute, anchor_second; /* config, -1 = none */
    int64_t period_start, period_end;
    int64_t trial_start, trial_end; /* 0 = null */
    tg_trial_end trial_end_behavior;
    bool trial_reminded;
    bool cancel_at_period_end;
    int64_t cancel_at, canceled_at, ended_at, paused_at; /* 0 = null */
    bool invoice_now_on_cancel;
    const char *cancellation_reason;  /* cancellation_details[reason] */
    const char *cancellation_comment, *cancellation_feedback; /* ... [comment], [feedback] */
    const char *default_payment_method;
    const char *description;
    bool send_invoice;    /* collection_method */
    int64_t days_until_due;
    bool free_stub; /* proration_behavior=none at creation: a period after the trial that the
                     * anchor shortens is free */
    bool cancel_no_prorate; /* cancel_at was set with proration_behavior=none */
    int64_t licensed_until; /* the current period's licensed items are charged up to here
                             * (a cancel_at inside it, prorated); 0 = the period's end */
    tg_sub_item *items;
    size_t nitems;
    tg_pending_line *pending;
    size_t npending;
    tg_sub_next_phase next_phase;
    tg_metadata metadata;
    tg_metadata schedule_metadata; /* its schedule's */
} tg_subscription;

typedef struct tg_sub_item_spec {
    const char *id;     /* update: an existing item, or NULL for a new one */
    const char *price;  /* NULL on update = keep */
    bool has_quantity;
    int64_t quantity;
    bool deleted;
    bool metadata_clear;
    tg_metadata metadata;
} tg_sub_item_spec;

typedef struct tg_sub_params {
    const char *customer;
    tg_sub_item_spec items[TG_SUB_ITEMS_MAX];
    size_t nitems;
    bool has_items;
    int64_t billing_cycle_anchor; /* 0 = none */
    bool anchor_now, anchor_unchanged;  /* update: billing_cycle_anchor=now|unchanged */
    int anchor_day, anchor_month, anchor_hour, anchor_minute, anchor_second; /* -1 = none */
    int64_t trial_end;      /* 0 = none */
    bool trial_end_now;
    int64_t trial_period_days; /* 0 = none */
    bool trial_from_plan;
    int trial_end_behavior; /* -1 = default */
    int cancel_at_period_end; /* -1 leave */
    bool cancel_at_set;
    int64_t cancel_at;        /* 0 with cancel_at_set: clear */
    int proration;            /* -1 = default (create_prorations) */
    int64_t proration_date;   /* 0 = now */
    int send_invoice;         /* -1 leave */
    int64_t days_until_due;   /* -1 = default (30) or leave */
    tg_opt_str default_payment_method, description;
    bool metadata_clear;
    tg_metadata metadata;
} tg_sub_params;

typedef struct tg_sub_filter {
    const char *customer, *price, *test_clock;
    int status; /* -1: every status but canceled (Stripe's default); -2: all */
    tg_time_range created;
} tg_sub_filter;

/* ---- invoices ---- */

typedef enum {
    TG_INV_DRAFT, TG_INV_OPEN, TG_INV_PAID, TG_INV_UNCOLLECTIBLE, TG_INV_VOID
} tg_inv_status;

/* Stripe's words for the statuses, by value, NULL ended (billing.c). */
extern const char *const tg_sub_status_words[];
extern const char *const tg_inv_status_words[];

typedef enum {
    TG_REASON_SUBSCRIPTION_CREATE, TG_REASON_SUBSCRIPTION_CYCLE, TG_REASON_SUBSCRIPTION_UPDATE,
    TG_REASON_MANUAL, TG_REASON_UPCOMING
} tg_billing_reason;

typedef struct tg_invoice_line {
    char id[TG_ID_MAX];
    char price[TG_ID_MAX], product[TG_ID_MAX];
    char subscription_item[TG_ID_MAX];
    const char *description;
    int64_t amount;
    tg_dec quantity;
    bool unit_amount_set;
    tg_dec unit_amount; /* the price's unit amount (per_unit), for pricing.unit_amount_decimal */
    int64_t period_start, period_end;
    bool proration;
    bool metered;
    tg_dec usage_before; /* metered: the item's `billed` before this line (re-computation) */
    int64_t usage_from;  /* metered: the item's usage start, if the item is gone by then */
} tg_invoice_line;

typedef struct tg_invoice {
    char id[TG_ID_MAX];
    char customer[TG_ID_MAX];
    /* The customer's, as Stripe copies them: at creation, and again at finalization. */
    const char *customer_email, *customer_name;
    tg_metadata customer_contact; /* address, phone, shipping (tg_customer.contact) */
    char subscription[TG_ID_MAX]; /* "" = none */
    char currency[4];
    char test_clock[TG_ID_MAX];
    char number[32];
    bool livemode;
    tg_inv_status status;
    tg_billing_reason billing_reason;
    int64_t created, period_start, period_end;
    int64_t automatically_finalizes_at; /* drafts; 0 = null */
    int64_t finalized_at, paid_at, voided_at, marked_uncollectible_at;
    bool auto_advance, paid_out_of_band;
    bool send_invoice;
    int64_t due_date;
    int64_t subtotal, total, amount_due, amount_paid, amount_remaining;
    tg_invoice_line *lines;
    size_t nlines;
    tg_metadata metadata;
} tg_invoice;

typedef struct tg_invoice_filter {
    const char *customer, *subscription;
    int status; /* -1 = any */
    tg_time_range created;
} tg_invoice_filter;

/* ---- events ---- */

typedef enum {
    TG_OBJ_PRODUCT, TG_OBJ_PRICE, TG_OBJ_TEST_CLOCK, TG_OBJ_SUBSCRIPTION, TG_OBJ_INVOICE,
    TG_OBJ_ENTITLEMENT_SUMMARY, TG_OBJ_FEATURE, TG_OBJ_CUSTOMER,
    TG_OBJ_METER
} tg_obj_kind;

/* A customer's active entitlements, as the summary event shows them. */
typedef struct tg_entitlement_summary {
    char customer[TG_ID_MAX];
    tg_active_entitlement *items;
    size_t n;
} tg_entitlement_summary;

/* An event's object, of the event's kind. */
typedef union tg_event_object {
    tg_product product;
    tg_price price;
    tg_test_clock clock;
    tg_subscription sub;
    tg_invoice invoice;
    tg_feature feature;
    tg_entitlement_summary summary;
    tg_customer customer;
    tg_meter meter;
} tg_event_object;

/* A recorded event: what happened, a snapshot of the object then, and for an *.updated event
 * the object as it was stored before (its changed fields are the event's
 * previous_attributes). The request that caused it, if one did. */
typedef struct tg_billing_event {
    char id[TG_ID_MAX];
    const char *type;
    int64_t created;
    bool livemode;
    tg_obj_kind kind;
    tg_event_object object;
    bool has_previous;
    tg_event_object previous;
    const char *request_id, *idempotency_key; /* NULL: none (automatic) */
    int pending_webhooks; /* not stored: the deliveries queued when it was read */
} tg_billing_event;

/* ---- use cases (scope is the caller's; results in a) ---- */

int tg_product_create(tg_service *svc, const tg_scope *scope, const tg_product_patch *p,
                      tg_arena *a, tg_product *out, tg_err *err);
int tg_product_update(tg_service *svc, const tg_scope *scope, const char *id,
                      const tg_product_patch *p, tg_arena *a, tg_product *out, tg_err *err);
int tg_product_retrieve(tg_service *svc, const tg_scope *scope, const char *id, tg_arena *a,
                        tg_product *out, tg_err *err);
/* Refused while the product has prices (Stripe's rule). */
int tg_product_delete(tg_service *svc, const tg_scope *scope, const char *id, tg_err *err);
int tg_product_list(tg_service *svc, const tg_scope *scope, const tg_catalog_filter *f,
                    const tg_page *page, tg_arena *a, tg_product **out, size_t *n,
                    bool *has_more, tg_err *err);

/* spec is a fully read price (id empty); product_data (name) creates its product inline when
 * spec->product is empty. */
int tg_price_create(tg_service *svc, const tg_scope *scope, const tg_price *spec,
                    const char *product_name, bool transfer_lookup_key, tg_arena *a,
                    tg_price *out, tg_err *err);
int tg_price_update(tg_service *svc, const tg_scope *scope, const char *id,
                    const tg_price_patch *p, tg_arena *a, tg_price *out, tg_err *err);
int tg_price_retrieve(tg_service *svc, const tg_scope *scope, const char *id, tg_arena *a,
                      tg_price *out, tg_err *err);
int tg_price_list(tg_service *svc, const tg_scope *scope, const tg_catalog_filter *f,
                  const tg_page *page, tg_arena *a, tg_price **out, size_t *n, bool *has_more,
                  tg_err *err);

int tg_test_clock_create(tg_service *svc, const tg_scope *scope, int64_t frozen_time,
                         const char *name, tg_arena *a, tg_test_clock *out, tg_err *err);
int tg_test_clock_retrieve(tg_service *svc, const tg_scope *scope, const char *id, tg_arena *a,
                           tg_test_clock *out, tg_err *err);
int tg_test_clock_list(tg_service *svc, const tg_scope *scope, const tg_page *page, tg_arena *a,
                       tg_test_clock **out, size_t *n, bool *has_more, tg_err *err);
/* Deletes the clock, its customers, and cancels their subscriptions. */
int tg_test_clock_delete(tg_service *svc, const tg_scope *scope, const char *id, tg_err *err);
/* Runs everything due on the clock up to frozen_time, in time order, then sets it. */
int tg_test_clock_advance(tg_service *svc, const tg_scope *scope, const char *id,
                          int64_t frozen_time, tg_arena *a, tg_test_clock *out, tg_err *err);

int tg_subscription_create(tg_service *svc, const tg_scope *scope, const tg_sub_params *p,
                           tg_arena *a, tg_subscription *out, tg_err *err);
int tg_subscription_update(tg_service *svc, const tg_scope *scope, const char *id,
                           const tg_sub_params *p, tg_arena *a, tg_subscription *out,
                           tg_err *err);
int tg_subscription_retrieve(tg_service *svc, const tg_scope *scope, const char *id,
                             tg_arena *a, tg_subscription *out, tg_err *err);
/* The id of the subscription that has the item (TG_ENOTFOUND, param "id", when none). */
int tg_subscription_item_owner(tg_service *svc, const tg_scope *scope, const char *item,
                               tg_arena *a, char owner[TG_ID_MAX], tg_err *err);
int tg_subscription_list(tg_service *svc, const tg_scope *scope, const tg_sub_filter *f,
                         const tg_page *page, tg_arena *a, tg_subscription **out, size_t *n,
                         bool *has_more, tg_err *err);
/* cancellation_details of a cancellation (NULL fields: none). */
typedef struct tg_cancel_details {
    const char *reason, *comment, *feedback;
} tg_cancel_details;
/* Cancels now; invoice_now bills the usage so far (and pending prorations). */
int tg_subscription_cancel(tg_service *svc, const tg_scope *scope, const char *id,
                           bool invoice_now, const tg_cancel_details *details, tg_arena *a,
                           tg_subscription *out, tg_err *err);
/* A paused subscription starts a new period now. */
int tg_subscription_resume(tg_service *svc, const tg_scope *scope, const char *id, tg_arena *a,
                           tg_subscription *out, tg_err *err);
/* What a schedule update says about its phases besides the next phase's items (0 / 0 items:
 * not given). Tollgate schedules have one shape: the current phase (the current items,
 * ending at the current period's end) and a next phase starting then, released once
 * started; anything given must describe that shape. */
typedef struct tg_phase_checks {
    int64_t start_date[2], end_date[2];
    size_t ncurrent;
    tg_phase_item current[TG_SUB_ITEMS_MAX]; /* phases[0][items] */
} tg_phase_checks;
/* A subscription schedule, made from a subscription (no change planned), updated (its next
 * phase, taking effect at the next renewal, and its metadata), released (the plan dropped,
 * the subscription goes on; also when its next phase starts) or canceled (with its
 * subscription, however that is canceled). Each schedule is stored as an object of its own
 * that names its subscription. While it is active, its plan (the next phase, the metadata)
 * lives in the subscription, whose engine applies it, and `sub` is the subscription as it is
 * now. Once ended, it keeps its final state: `sub` is then the subscription as it was when the
 * schedule ended (its phases, items and metadata then), stored with it, and the subscription
 * may get another schedule. An ended schedule cannot be changed. */
typedef enum { TG_SCHED_ACTIVE, TG_SCHED_RELEASED, TG_SCHED_CANCELED } tg_sched_status;
typedef struct tg_sub_schedule {
    char id[TG_ID_MAX];
    char subscription[TG_ID_MAX];
    int64_t created;
    tg_sched_status status;
    int64_t released_at, canceled_at; /* 0 = null */
    bool ended;                       /* status is not active: sub is the stored final state */
    tg_subscription sub;
} tg_sub_schedule;

typedef enum {
    TG_SCHEDULE_CREATE, TG_SCHEDULE_UPDATE, TG_SCHEDULE_RELEASE, TG_SCHEDULE_CANCEL
} tg_schedule_op;
typedef struct tg_schedule_params {
    tg_schedule_op op;
    bool phases_set; /* phases given: phase (if set) becomes the next phase, else none */
    tg_sub_next_phase phase;
    tg_phase_checks checks;
    bool metadata_clear;
    tg_metadata metadata;
    bool invoice_now; /* cancel: a final invoice of the usage and pending lines */
} tg_schedule_params;

/* Runs p: create makes a schedule from subscription `id`; the other ops run on schedule `id`
 * (TG_ENOTFOUND naming "id" when there is none; TG_ESTATE when it has ended). */
int tg_subscription_schedule(tg_service *svc, const tg_scope *scope, const char *id,
                             const tg_schedule_params *p, tg_arena *a, tg_sub_schedule *out,
                             tg_err *err);
int tg_schedule_retrieve(tg_service *svc, const tg_scope *scope, const char *id, tg_arena *a,
                         tg_sub_schedule *out, tg_err *err);

/* Filters of GET /v1/subscription_schedules (NULL / unset: any): the time a schedule was
 * released, canceled or completed (Tollgate's never complete: they end released), and
 * scheduled (not started yet: Tollgate's start when they are made). */
typedef struct tg_schedule_filter {
    const char *customer;
    tg_time_range created, released_at, canceled_at, completed_at;
    bool scheduled;
} tg_schedule_filter;

int tg_schedule_list(tg_service *svc, const tg_scope *scope, const tg_schedule_filter *f,
                     const tg_page *page, tg_arena *a, tg_sub_schedule **out, size_t *n,
                     bool *has_more, tg_err *err);

int tg_invoice_retrieve(tg_service *svc, const tg_scope *scope, const char *id, tg_arena *a,
                        tg_invoice *out, tg_err *err);
int tg_invoice_list(tg_service *svc, const tg_scope *scope, const tg_invoice_filter *f,
                    const tg_page *page, tg_arena *a, tg_invoice **out, size_t *n,
                    bool *has_more, tg_err *err);
typedef enum { TG_INV_FINALIZE, TG_INV_PAY, TG_INV_VOID_IT, TG_INV_UNCOLLECT } tg_inv_action;
/* pay requires paid_out_of_band (Tollgate collects no payments); finalize sets the invoice's
 * auto_advance when auto_advance >= 0. */
int tg_invoice_act(tg_service *svc, const tg_scope *scope, const char *id, tg_inv_action act,
                   bool paid_out_of_band, int auto_advance, tg_arena *a, tg_invoice *out,
                   tg_err *err);
/* The subscription's next invoice as if its period ended now: usage so far. */
int tg_invoice_preview(tg_service *svc, const tg_scope *scope, const char *subscription,
                       tg_arena *a, tg_invoice *out, tg_err *err);

int tg_billing_event_retrieve(tg_service *svc, const tg_scope *scope, const char *id,
                              tg_arena *a, tg_billing_event *out, tg_err *err);
/* Filters of GET /v1/events: type (a trailing ".*" matches a prefix) or one of types (up to
 * TG_EVENT_TYPES_MAX), and created. */
#define TG_EVENT_TYPES_MAX 20
typedef struct tg_event_filter {
    const char *type;
    const char *const *types;
    size_t ntypes;
    tg_time_range created;
} tg_event_filter;

int tg_billing_event_list(tg_service *svc, const tg_scope *scope, const tg_event_filter *f,
                          const tg_page *page, tg_arena *a, tg_billing_event **out, size_t *n,
                          bool *has_more, tg_err *err);

/* Runs what is due on the server's clock (subscriptions and invoices without a test clock).
 * Returns the number of objects advanced; called by the scheduler and `tollgate bill run`. */
int tg_billing_run_due(tg_service *svc, int64_t now, tg_err *err);

/* Grace period between a renewal's draft and its finalization (seconds, 0..72 h). */
void tg_billing_set_grace(tg_service *svc, int64_t seconds);

#endif
