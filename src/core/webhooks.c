/* webhooks.c -- webhook endpoints and their delivery queue (see webhooks.h).
 *
 * Endpoints are billing objects (kind "webhook_endpoint", `active` = enabled), so they share
 * the object table's lists, cursors and records. The queue is the store's webhook_deliveries
 * table: bill_emit calls bill_queue_webhooks inside the job that records the event, so the
 * event and its deliveries commit together. A delivery's times are the server's real clock,
 * also for events of a test clock: a delivery happens now, whatever the simulated time.
 *
 * The retry schedule, in units of TG_WEBHOOK_RETRY_UNIT seconds (a server setting, so tests
 * can run it in seconds): 1, 5, 30, 120, 300, 600, then 720 four times -- about 66 hours in
 * all, Stripe's "up to three days" in live mode; test mode stops after the first three
 * retries, as Stripe's sandboxes do. Stripe publishes no exact schedule.
 */
#include "core/webhooks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/ids.h"
#include "base/log.h"
#include "base/str.h"
#include "core/billing_internal.h"
#include "core/metadata.h"

#define KIND_WEBHOOK "webhook_endpoint"

/* Every type bill_emit records (it asserts so), in Stripe's names. */
static const char *const event_types[] = {
    "billing.meter.created",
    "billing.meter.deactivated",
    "billing.meter.reactivated",
    "billing.meter.updated",
    "customer.created",
    "customer.deleted",
    "customer.subscription.created",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.trial_will_end",
    "customer.subscription.updated",
    "customer.updated",
    "entitlements.active_entitlement_summary.updated",
    "invoice.created",
    "invoice.finalized",
    "invoice.marked_uncollectible",
    "invoice.paid",
    "invoice.voided",
    "price.created",
    "price.updated",
    "product.created",
    "product.deleted",
    "product.updated",
    "test_helpers.test_clock.created",
    "test_helpers.test_clock.deleted",
    "test_helpers.test_clock.ready",
};

/* Every type an endpoint may enable on Stripe (stripe-node 22.6.2's
 * WebhookEndpointCreateParams.EnabledEvent, "*" aside), sorted for bsearch. Code written for
 * Stripe enables such types alongside the ones Tollgate sends (payments, checkout): they are
 * accepted, as Stripe accepts them, and never sent; a name outside this list is refused as on
 * Stripe. The e2e suite checks the list against the installed client's. */
static const char *const stripe_event_types[] = {
    "account.application.authorized", "account.application.deauthorized",
    "account.external_account.created", "account.external_account.deleted",
    "account.external_account.updated", "account.updated", "application_fee.created",
    "application_fee.refund.updated", "application_fee.refunded", "balance.available",
    "balance_settings.updated", "billing.alert.triggered",
    "billing.credit_balance_transaction.created", "billing.credit_grant.created",
    "billing.credit_grant.updated", "billing.meter.created", "billing.meter.deactivated",
    "billing.meter.reactivated", "billing.meter.updated", "billing_portal.configuration.created",
    "billing_portal.configuration.updated", "billing_portal.session.created", "capability.updated",
    "cash_balance.funds_available", "charge.captured", "charge.dispute.closed",
    "charge.dispute.created", "charge.dispute.funds_reinstated", "charge.dispute.funds_withdrawn",
    "charge.dispute.updated", "charge.expired", "charge.failed", "charge.pending",
    "charge.refund.updated", "charge.refunded", "charge.succeeded", "charge.updated",
    "checkout.session.async_payment_failed", "checkout.session.async_payment_succeeded",
    "checkout.session.completed", "checkout.session.expired", "climate.order.canceled",
    "climate.order.created", "climate.order.delayed", "climate.order.delivered",
    "climate.order.product_substituted", "climate.product.created",
    "climate.product.pricing_updated", "coupon.created", "coupon.deleted", "coupon.updated",
    "credit_note.created", "credit_note.updated", "credit_note.voided", "customer.created",
    "customer.deleted", "customer.discount.created", "customer.discount.deleted",
    "customer.discount.updated", "customer.source.created", "customer.source.deleted",
    "customer.source.expiring", "customer.source.updated", "customer.subscription.created",
    "customer.subscription.deleted", "customer.subscription.paused",
    "customer.subscription.pending_update_applied", "customer.subscription.pending_update_expired",
    "customer.subscription.resumed", "customer.subscription.trial_will_end",
    "customer.subscription.updated", "customer.tax_id.created", "customer.tax_id.deleted",
    "customer.tax_id.updated", "customer.updated", "customer_cash_balance_transaction.created",
    "entitlements.active_entitlement_summary.updated", "file.created",
    "financial_connections.account.account_numbers_updated",
    "financial_connections.account.created", "financial_connections.account.deactivated",
    "financial_connections.account.disconnected",
    "financial_connections.account.expected_deactivation_date_updated",
    "financial_connections.account.reactivated", "financial_connections.account.refreshed_balance",
    "financial_connections.account.refreshed_ownership",
    "financial_connections.account.refreshed_transactions",
    "financial_connections.account.supported_payment_method_types_updated",
    "financial_connections.account.upcoming_account_number_expiry",
    "financial_connections.account.upcoming_deactivation",
    "financial_connections.authorization.expected_deactivation_date_updated",
    "financial_connections.authorization.upcoming_deactivation",
    "identity.verification_session.canceled", "identity.verification_session.created",
    "identity.verification_session.processing", "identity.verification_session.redacted",
    "identity.verification_session.requires_input", "identity.verification_session.verified",
    "invoice.created", "invoice.deleted", "invoice.finalization_failed", "invoice.finalized",
    "invoice.marked_uncollectible", "invoice.overdue", "invoice.overpaid", "invoice.paid",
    "invoice.payment_action_required", "invoice.payment_attempt_required",
    "invoice.payment_failed", "invoice.payment_succeeded", "invoice.sent", "invoice.upcoming",
    "invoice.updated", "invoice.voided", "invoice.will_be_due", "invoice_payment.paid",
    "invoiceitem.created", "invoiceitem.deleted", "issuing_authorization.created",
    "issuing_authorization.request", "issuing_authorization.updated", "issuing_card.created",
    "issuing_card.updated", "issuing_cardholder.created", "issuing_cardholder.updated",
    "issuing_dispute.closed", "issuing_dispute.created", "issuing_dispute.funds_reinstated",
    "issuing_dispute.funds_rescinded", "issuing_dispute.submitted", "issuing_dispute.updated",
    "issuing_personalization_design.activated", "issuing_personalization_design.deactivated",
    "issuing_personalization_design.rejected", "issuing_personalization_design.updated",
    "issuing_token.created", "issuing_token.updated", "issuing_transaction.created",
    "issuing_transaction.purchase_details_receipt_updated", "issuing_transaction.updated",
    "mandate.updated", "payment_intent.amount_capturable_updated", "payment_intent.canceled",
    "payment_intent.created", "payment_intent.partially_funded", "payment_intent.payment_failed",
    "payment_intent.processing", "payment_intent.requires_action", "payment_intent.succeeded",
    "payment_link.created", "payment_link.updated", "payment_method.attached",
    "payment_method.automatically_updated", "payment_method.detached", "payment_method.updated",
    "payout.canceled", "payout.created", "payout.failed", "payout.paid",
    "payout.reconciliation_completed", "payout.updated", "person.created", "person.deleted",
    "person.updated", "plan.created", "plan.deleted", "plan.updated", "price.created",
    "price.deleted", "price.updated", "product.created", "product.deleted", "product.updated",
    "promotion_code.created", "promotion_code.updated", "quote.accepted", "quote.canceled",
    "quote.created", "quote.finalized", "radar.early_fraud_warning.created",
    "radar.early_fraud_warning.updated", "refund.created", "refund.failed", "refund.updated",
    "reporting.report_run.failed", "reporting.report_run.succeeded",
    "reporting.report_type.updated", "reserve.hold.created", "reserve.hold.updated",
    "reserve.plan.created", "reserve.plan.disabled", "reserve.plan.expired",
    "reserve.plan.updated", "reserve.release.created", "review.closed", "review.opened",
    "setup_intent.canceled", "setup_intent.created", "setup_intent.requires_action",
    "setup_intent.setup_failed", "setup_intent.succeeded", "sigma.scheduled_query_run.created",
    "source.canceled", "source.chargeable", "source.failed", "source.mandate_notification",
    "source.refund_attributes_required", "source.transaction.created",
    "source.transaction.updated", "subscription_schedule.aborted",
    "subscription_schedule.canceled", "subscription_schedule.completed",
    "subscription_schedule.created", "subscription_schedule.expiring",
    "subscription_schedule.released", "subscription_schedule.updated", "tax.settings.updated",
    "tax_rate.created", "tax_rate.updated", "terminal.reader.action_failed",
    "terminal.reader.action_succeeded", "terminal.reader.action_updated",
    "test_helpers.test_clock.advancing", "test_helpers.test_clock.created",
    "test_helpers.test_clock.deleted", "test_helpers.test_clock.internal_failure",
    "test_helpers.test_clock.ready", "topup.canceled", "topup.created", "topup.failed",
    "topup.reversed", "topup.succeeded", "transfer.created", "transfer.reversed",
    "transfer.updated", "treasury.credit_reversal.created", "treasury.credit_reversal.posted",
    "treasury.debit_reversal.completed", "treasury.debit_reversal.created",
    "treasury.debit_reversal.initial_credit_granted", "treasury.financial_account.closed",
    "treasury.financial_account.created", "treasury.financial_account.features_status_updated",
    "treasury.inbound_transfer.canceled", "treasury.inbound_transfer.created",
    "treasury.inbound_transfer.failed", "treasury.inbound_transfer.succeeded",
    "treasury.outbound_payment.canceled", "treasury.outbound_payment.created",
    "treasury.outbound_payment.expected_arrival_date_updated", "treasury.outbound_payment.failed",
    "treasury.outbound_payment.posted", "treasury.outbound_payment.returned",
    "treasury.outbound_payment.tracking_details_updated", "treasury.outbound_transfer.canceled",
    "treasury.outbound_transfer.created",
    "treasury.outbound_transfer.expected_arrival_date_updated",
    "treasury.outbound_transfer.failed", "treasury.outbound_transfer.posted",
    "treasury.outbound_transfer.returned", "treasury.outbound_transfer.tracking_details_updated",
    "treasury.received_credit.created", "treasury.received_credit.failed",
    "treasury.received_credit.succeeded", "treasury.received_debit.created",
};

static int compare_names(const void *key, const void *item)
{
    return strcmp(key, *(const char *const *)item);
}

bool tg_webhook_event_type_known(const char *type)
{
    for (size_t i = 0; i < sizeof event_types / sizeof *event_types; i++)
        if (strcmp(event_types[i], type) == 0)
            return true;
    return false;
}

bool tg_webhook_event_type_valid(const char *type)
{
    return strcmp(type, "*") == 0 ||
           bsearch(type, stripe_event_types, sizeof stripe_event_types / sizeof *stripe_event_types,
                   sizeof *stripe_event_types, compare_names) != NULL;
}

static const int64_t retry_units[] = {1, 5, 30, 120, 300, 600, 720, 720, 720, 720};
#define TEST_MODE_RETRIES 3

int64_t tg_webhook_retry_units(int attempts, bool livemode)
{
    int max = livemode ? (int)(sizeof retry_units / sizeof *retry_units) : TEST_MODE_RETRIES;
    return attempts >= 1 && attempts <= max ? retry_units[attempts - 1] : -1;
}

/* Whether a list of words ("a b c ", see tg_webhook_endpoint) holds this one. */
static bool has_word(const char *words, const char *word)
{
    size_t len = strlen(word);
    for (const char *p = words; p && *p;) {
        const char *end = strchr(p, ' ');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == len && memcmp(p, word, n) == 0)
            return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

/* Whether an endpoint's enabled_events take this type. */
static bool takes(const char *enabled, const char *type)
{
    return has_word(enabled, "*") || has_word(enabled, type);
}

/* ---------------------------------------------------------------- objects */

static int decode_endpoint(const void *d, size_t n, tg_arena *a, void *out)
{
    return tg_webhook_endpoint_decode(d, n, a, out);
}

static int save_endpoint(bctx *c, const tg_webhook_endpoint *w)
{
    tg_buf b;
    tg_buf_init(&b, TG_RECORD_MAX);
    tg_webhook_endpoint_encode(&b, w);
    tg_obj o = {.kind = KIND_WEBHOOK, .created = w->created, .active = !w->disabled};
    tg_strlcpy(o.id, w->id, sizeof o.id);
    return bill_save(c, &o, &b);
}

/* An absolute http(s) URL with a host, nothing a header line could not carry. Live mode
 * endpoints must use https, as Stripe requires. */
static int check_url(const char *url, bool livemode, tg_err *err)
{
    size_t len = strlen(url);
    const char *host = strncmp(url, "https://", 8) == 0  ? url + 8
                       : strncmp(url, "http://", 7) == 0 ? url + 7
                                                         : NULL;
    bool plain = true;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)url[i] <= ' ' || url[i] == 0x7f)
            plain = false;
    if (!host || !*host || *host == '/' || *host == ':' || !plain)
        return tg_err_set(err, TG_EINVAL, "url",
                          "Invalid URL: give an absolute http:// or https:// URL with a host "
                          "and no spaces.");
    if (len > TG_WEBHOOK_URL_MAX)
        return tg_err_set(err, TG_EINVAL, "url", "Invalid URL: at most %d characters.",
                          TG_WEBHOOK_URL_MAX);
    if (livemode && host != url + 8)
        return tg_err_set(err, TG_EINVAL, "url",
                          "Invalid URL: live mode webhook endpoints must use https.");
    return TG_OK;
}

/* enabled_events as stored: each valid type once, each followed by a space. */
static int join_events(const tg_webhook_patch *p, tg_arena *a, const char **out, tg_err *err)
{
    size_t total = 1;
    for (size_t i = 0; i < p->nevents; i++) {
        const char *t = p->events[i];
        if (!tg_webhook_event_type_valid(t)) {
            char param[40];
            snprintf(param, sizeof param, "enabled_events[%zu]", i);
            return tg_err_set(err, TG_EINVAL, param,
                              "Invalid %s: '%.100s' is not a Stripe event type.", param, t);
        }
        total += strlen(t) + 1;
    }
    char *s = tg_arena_alloc(a, total);
    if (!s)
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    *s = '\0';
    size_t len = 0;
    for (size_t i = 0; i < p->nevents; i++) {
        if (has_word(s, p->events[i]))
            continue; /* a repeat */
        size_t n = strlen(p->events[i]);
        memcpy(s + len, p->events[i], n);
        s[len + n] = ' ';
        len += n + 1;
        s[len] = '\0';
    }
    *out = s;
    return TG_OK;
}

typedef struct endpoint_args {
    const char *id;
    const tg_webhook_patch *patch;
    const tg_page *page;
    tg_webhook_endpoint *out;
    tg_webhook_endpoint **items;
    size_t *n;
    bool *has_more;
} endpoint_args;

static int endpoint_apply(bctx *c, tg_webhook_endpoint *w, const tg_webhook_patch *p)
{
    if (p->url) {
        int rc = check_url(p->url, c->scope->livemode, c->err);
        if (rc)
            return rc;
        w->url = p->url;
    }
    if (p->nevents) {
        int rc = join_events(p, c->a, &w->enabled_events, c->err);
        if (rc)
            return rc;
    }
    if (p->description.set)
        w->description = p->description.value;
    if (p->disabled >= 0)
        w->disabled = p->disabled;
    return tg_metadata_merge(&w->metadata, p->metadata_clear, &p->metadata, c->a, "metadata",
                             c->err);
}

static int endpoint_create_fn(bctx *c, void *arg)
{
    endpoint_args *ea = arg;
    tg_webhook_endpoint *w = ea->out;
    memset(w, 0, sizeof *w);
    tg_obj *rows;
    size_t n;
    tg_page page = {.limit = TG_WEBHOOK_ENDPOINTS_MAX};
    tg_obj_filter all = {.active = -1};
    int rc = c->s->ops->obj_list(c->s, c->scope, KIND_WEBHOOK, &all, &page, c->a, &rows, &n,
                                 c->err);
    if (rc)
        return rc;
    if (n >= TG_WEBHOOK_ENDPOINTS_MAX)
        return tg_err_set(c->err, TG_EINVAL, NULL,
                          "You have reached the maximum of %d %s webhook endpoints.",
                          TG_WEBHOOK_ENDPOINTS_MAX, c->scope->livemode ? "live" : "test");
    if ((rc = bill_new_id(c, w->id, "we_")))
        return rc;
    if (tg_id_random(w->secret, sizeof w->secret, "whsec_", 32))
        return tg_err_set(c->err, TG_ESTORE, NULL, "random generator failed");
    w->created = c->now;
    w->livemode = c->scope->livemode;
    w->api_version = ea->patch->api_version;
    rc = endpoint_apply(c, w, ea->patch);
    return rc ? rc : save_endpoint(c, w);
}

int tg_webhook_endpoint_create(tg_service *svc, const tg_scope *scope, const tg_webhook_patch *p,
                               tg_arena *a, tg_webhook_endpoint *out, tg_err *err)
{
    if (!p->url)
        return tg_err_set(err, TG_EMISSING, "url", "Missing required param: url.");
    if (!p->nevents)
        return tg_err_set(err, TG_EMISSING, "enabled_events",
                          "Missing required param: enabled_events.");
    int rc = tg_metadata_validate(&p->metadata, "metadata", err);
    if (rc)
        return rc;
    endpoint_args ea = {.patch = p, .out = out};
    return bill_write(svc, scope, a, endpoint_create_fn, &ea, err);
}

static int endpoint_update_fn(bctx *c, void *arg)
{
    endpoint_args *ea = arg;
    int rc = bill_load(c, KIND_WEBHOOK, ea->id, "id", decode_endpoint, ea->out);
    if (!rc)
        rc = endpoint_apply(c, ea->out, ea->patch);
    return rc ? rc : save_endpoint(c, ea->out);
}

int tg_webhook_endpoint_update(tg_service *svc, const tg_scope *scope, const char *id,
                               const tg_webhook_patch *p, tg_arena *a, tg_webhook_endpoint *out,
                               tg_err *err)
{
    int rc = tg_metadata_validate(&p->metadata, "metadata", err);
    if (rc)
        return rc;
    endpoint_args ea = {.id = id, .patch = p, .out = out};
    return bill_write(svc, scope, a, endpoint_update_fn, &ea, err);
}

int tg_webhook_endpoint_retrieve(tg_service *svc, const tg_scope *scope, const char *id,
                                 tg_arena *a, tg_webhook_endpoint *out, tg_err *err)
{
    return bill_retrieve(svc, scope, KIND_WEBHOOK, id, decode_endpoint, a, out, err);
}

static int endpoint_list_fn(bctx *c, void *arg)
{
    endpoint_args *ea = arg;
    tg_obj_filter f = {.active = -1};
    return bill_list(c, KIND_WEBHOOK, &f, ea->page, decode_endpoint, sizeof(tg_webhook_endpoint),
                     (void **)ea->items, ea->n, ea->has_more);
}

int tg_webhook_endpoint_list(tg_service *svc, const tg_scope *scope, const tg_page *page,
                             tg_arena *a, tg_webhook_endpoint **out, size_t *n, bool *has_more,
                             tg_err *err)
{
    endpoint_args ea = {.page = page, .items = out, .n = n, .has_more = has_more};
    return bill_read(svc, scope, a, endpoint_list_fn, &ea, err);
}

static int endpoint_delete_fn(bctx *c, void *arg)
{
    endpoint_args *ea = arg;
    tg_webhook_endpoint w;
    int rc = bill_load(c, KIND_WEBHOOK, ea->id, "id", decode_endpoint, &w);
    if (!rc)
        rc = c->s->ops->obj_delete(c->s, c->scope, KIND_WEBHOOK, ea->id, c->err);
    if (!rc)
        rc = c->s->ops->delivery_delete(c->s, c->scope, 0, ea->id, c->err);
    return rc;
}

int tg_webhook_endpoint_delete(tg_service *svc, const tg_scope *scope, const char *id,
                               tg_err *err)
{
    tg_arena a;
    tg_arena_init(&a, 0);
    endpoint_args ea = {.id = id};
    int rc = bill_write(svc, scope, &a, endpoint_delete_fn, &ea, err);
    tg_arena_free(&a);
    return rc;
}

/* ---------------------------------------------------------------- queueing */

int bill_queue_webhooks(bctx *c, const tg_billing_event *e)
{
    tg_obj *rows;
    size_t n;
    tg_page page = {.limit = TG_WEBHOOK_ENDPOINTS_MAX};
    tg_obj_filter enabled = {.active = 1};
    int rc = c->s->ops->obj_list(c->s, c->scope, KIND_WEBHOOK, &enabled, &page, c->a, &rows, &n,
                                 c->err);
    int64_t now = tg_service_now(c->svc);
    for (size_t i = 0; !rc && i < n && i < TG_WEBHOOK_ENDPOINTS_MAX; i++) {
        tg_webhook_endpoint w;
        if (tg_webhook_endpoint_decode(rows[i].body, rows[i].len, c->a, &w) < 0) {
            /* Its events are not lost to the others, nor is the event itself refused. */
            tg_log(TG_LOG_ERROR, "webhooks: endpoint %s does not decode; %s is not queued to it",
                   rows[i].id, e->id);
            continue;
        }
        if (!takes(w.enabled_events, e->type))
            continue;
        tg_delivery d = {.attempts = 0, .created = now, .due = now};
        tg_strlcpy(d.endpoint, w.id, sizeof d.endpoint);
        tg_strlcpy(d.event, e->id, sizeof d.event);
        rc = c->s->ops->delivery_add(c->s, c->scope, &d, c->err);
        c->queued_webhooks = true;
    }
    return rc;
}

int bill_pending_webhooks(bctx *c, tg_billing_event *e)
{
    return c->s->ops->delivery_count(c->s, c->scope, e->id, &e->pending_webhooks, c->err);
}

/* ---------------------------------------------------------------- delivery */

typedef struct take_args {
    int limit;
    tg_webhook_attempt *out;
    size_t n;
    const tg_webhook_attempt *settle;
    const int *outcome;
    size_t nsettle;
} take_args;

/* Loads what one delivery needs (in its scope); TG_ENOTFOUND when it cannot be sent any
 * more: its endpoint is gone or disabled, its event is gone, or either record does not
 * decode (logged: one bad row must not fail the writer's batch, nor stop the queue). */
static int load_attempt(bctx *c, tg_webhook_attempt *at)
{
    tg_obj o;
    tg_err ignore = {0};
    const tg_delivery *d = &at->delivery;
    int rc = c->s->ops->obj_get(c->s, c->scope, KIND_WEBHOOK, d->endpoint, c->a, &o, &ignore);
    if (!rc && tg_webhook_endpoint_decode(o.body, o.len, c->a, &at->endpoint) < 0) {
        tg_log(TG_LOG_ERROR, "webhooks: endpoint %s does not decode; %s is dropped", d->endpoint,
               d->event);
        return TG_ENOTFOUND;
    }
    if (!rc && at->endpoint.disabled)
        return TG_ENOTFOUND;
    if (!rc)
        rc = c->s->ops->obj_get(c->s, c->scope, KIND_EVENT, d->event, c->a, &o, &ignore);
    if (!rc && tg_billing_event_decode(o.body, o.len, c->a, &at->event) < 0) {
        tg_log(TG_LOG_ERROR, "webhooks: event %s does not decode; its delivery to %s is dropped",
               d->event, d->endpoint);
        return TG_ENOTFOUND;
    }
    if (rc == TG_ENOTFOUND || rc == TG_OK)
        return rc;
    return tg_err_set(c->err, rc, NULL, "%s", ignore.msg);
}

/* Seconds a taken delivery is kept from other takes: a minute of the retry schedule. */
static int64_t lease_seconds(tg_service *svc)
{
    int64_t s = TG_WEBHOOK_LEASE * tg_service_webhook_retry_unit(svc) / TG_WEBHOOK_RETRY_UNIT;
    return s > 0 ? s : 1;
}

static int take_fn(bctx *c, void *arg)
{
    take_args *t = arg;
    tg_delivery *rows;
    size_t n;
    int64_t now = tg_service_now(c->svc);
    int rc = c->s->ops->delivery_due(c->s, now, t->limit, c->a, &rows, &n, c->err);
    if (!rc && !(t->out = tg_arena_alloc(c->a, (n ? n : 1) * sizeof *t->out)))
        rc = tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
    const tg_scope *caller = c->scope;
    for (size_t i = 0; !rc && i < n; i++) {
        tg_webhook_attempt *at = &t->out[t->n];
        memset(at, 0, sizeof *at);
        at->delivery = rows[i];
        c->scope = &rows[i].scope;
        /* An attempt counts when it is taken: one that never settles (its sender died) uses
         * up the schedule like a failure, so a delivery cannot come back forever. */
        bool over = rows[i].attempts > 0 &&
                    tg_webhook_retry_units(rows[i].attempts, rows[i].scope.livemode) < 0;
        if (over)
            tg_log(TG_LOG_WARN, "webhooks: %s to %s was taken %d times; no more retries",
                   rows[i].event, rows[i].endpoint, rows[i].attempts);
        rc = over ? TG_ENOTFOUND : load_attempt(c, at);
        if (rc == TG_ENOTFOUND) {
            rc = c->s->ops->delivery_delete(c->s, c->scope, rows[i].seq, NULL, c->err);
            continue;
        }
        if (!rc)
            rc = c->s->ops->delivery_set(c->s, rows[i].seq, rows[i].attempts + 1,
                                         now + lease_seconds(c->svc), c->err);
        if (!rc)
            rc = bill_pending_webhooks(c, &at->event);
        if (!rc)
            t->n++;
    }
    c->scope = caller;
    return rc;
}

static int any_due_fn(bctx *c, void *arg)
{
    tg_delivery *rows;
    return c->s->ops->delivery_due(c->s, tg_service_now(c->svc), 1, c->a, &rows, arg, c->err);
}

int tg_webhook_take(tg_service *svc, int limit, tg_arena *a, tg_webhook_attempt **out,
                    size_t *n, tg_err *err)
{
    tg_scope none = {{0}, false};
    take_args t = {.limit = limit};
    size_t due = 0;
    /* A read first: the writer sees a job only when there is work. */
    int rc = bill_read(svc, &none, a, any_due_fn, &due, err);
    if (!rc && due)
        rc = bill_write(svc, &none, a, take_fn, &t, err);
    *out = t.out;
    *n = rc ? 0 : t.n;
    return rc;
}

static int settle_fn(bctx *c, void *arg)
{
    take_args *t = arg;
    int64_t now = tg_service_now(c->svc);
    int64_t unit = tg_service_webhook_retry_unit(c->svc);
    int rc = TG_OK;
    for (size_t i = 0; !rc && i < t->nsettle; i++) {
        const tg_delivery *d = &t->settle[i].delivery;
        int attempts = d->attempts + 1; /* as the take stored it */
        bool delivered = t->outcome[i] == TG_WEBHOOK_DELIVERED;
        if (t->outcome[i] == TG_WEBHOOK_UNSETTLED)
            continue;
        int64_t units = delivered ? -1 : tg_webhook_retry_units(attempts, d->scope.livemode);
        if (units >= 0) {
            rc = c->s->ops->delivery_set(c->s, d->seq, attempts, now + units * unit, c->err);
            continue;
        }
        if (!delivered)
            tg_log(TG_LOG_WARN, "webhooks: %s to %s failed %d times; no more retries",
                   d->event, d->endpoint, attempts);
        rc = c->s->ops->delivery_delete(c->s, &d->scope, d->seq, NULL, c->err);
    }
    return rc;
}

int tg_webhook_settle(tg_service *svc, const tg_webhook_attempt *at, size_t n,
                      const int *outcome, tg_err *err)
{
    if (!n)
        return TG_OK;
    tg_arena a;
    tg_arena_init(&a, 0);
    tg_scope none = {{0}, false};
    take_args t = {.settle = at, .outcome = outcome, .nsettle = n};
    int rc = bill_write(svc, &none, &a, settle_fn, &t, err);
    tg_arena_free(&a);
    return rc;
}
