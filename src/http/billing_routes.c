/* billing_routes.c -- the handlers of the billing API: products, prices, test clocks,
 * subscriptions (and their schedules' next phase), invoices and events.
 *
 * Same three steps as routes.c: read the parameters (unknown ones are refused before any
 * write), call one use case (core/billing.h), write the object. Shapes follow Stripe's dahlia
 * types field for field; fields Tollgate has no concept of (taxes, discounts, payment
 * intents) are written as Stripe writes them when unused: null, false, 0 or [].
 *
 * Subscription schedules are supported for the change the seed documents need: a schedule
 * made from a subscription whose second phase replaces the items at the next renewal. A
 * schedule is rendered from its subscription (core/billing.h's tg_sub_schedule): the one it
 * manages now while it is active, or the copy kept from when it was released or canceled.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/str.h"
#include "core/billing.h"
#include "core/metadata.h"
#include "core/search.h"
#include "http/api.h"

static const char *const interval_words[] = {"day", "week", "month", "year", NULL};
static const char *const reason_words[] = {"subscription_create", "subscription_cycle",
                                           "subscription_update", "manual", "upcoming"};

/* ================================================================ small getters */

/* true/false. */
static bool p_bool(tg_req *req, tg_param *parent, const char *name, const char *path, bool *out)
{
    static const char *const words[] = {"false", "true", NULL};
    int v;
    if (!p_enum(req, parent, name, path, words, &v))
        return false;
    *out = v == 1;
    return true;
}

/* A non-negative decimal string with at most 12 fractional digits. */
static bool p_dec(tg_req *req, tg_param *parent, const char *name, const char *path, tg_dec *out)
{
    const char *s;
    if (!path)
        path = name;
    if (!p_str(req, parent, name, path, 64, &s))
        return false;
    if (tg_dec_parse(s, strlen(s), out) || *out < 0) {
        tg_err_set(&req->err, TG_EINVAL, path,
                   "Invalid %s: must be a non-negative decimal with at most 12 decimal places.",
                   path);
        return false;
    }
    return true;
}

static void dec_string(tg_jw *w, const char *key, tg_dec d)
{
    char s[TG_DEC_STR_MAX];
    tg_dec_format(d, s);
    jw_kstr(w, key, s);
}

/* unit_amount (an integer when whole) and unit_amount_decimal. */
static void amount_pair(tg_jw *w, const char *key, const char *key_decimal, bool set, tg_dec d)
{
    if (set && d % TG_DEC_ONE == 0)
        jw_kint(w, key, (int64_t)(d / TG_DEC_ONE));
    else
        jw_knull(w, key);
    if (set)
        dec_string(w, key_decimal, d);
    else
        jw_knull(w, key_decimal);
}

static void empty_array(tg_jw *w, const char *key)
{
    jw_key(w, key);
    jw_arr(w);
    jw_aend(w);
}

/* Fields Stripe's types always have, for what Tollgate does not do (taxes, Connect, payment
 * collection, billing thresholds): their "off" values. */
static void nulls(tg_jw *w, const char *const *keys)
{
    for (; *keys; keys++)
        jw_knull(w, *keys);
}

static void issuer_self(tg_jw *w)
{
    jw_key(w, "issuer");
    jw_obj(w);
    jw_kstr(w, "type", "self");
    jw_end(w);
}

/* automatic_tax: off (an invoice's also says its provider and status: none). */
static void automatic_tax_off(tg_jw *w, bool invoice)
{
    jw_key(w, "automatic_tax");
    jw_obj(w);
    jw_knull(w, "disabled_reason");
    jw_kbool(w, "enabled", false);
    jw_knull(w, "liability");
    if (invoice) {
        jw_knull(w, "provider");
        jw_knull(w, "status");
    }
    jw_end(w);
}

static void billing_mode_classic(tg_jw *w)
{
    jw_key(w, "billing_mode");
    jw_obj(w);
    jw_knull(w, "flexible");
    jw_kstr(w, "type", "classic");
    jw_end(w);
}

/* A subscription's or a schedule's invoice_settings (a schedule's also has days_until_due). */
static void invoice_settings(tg_jw *w, bool with_days_until_due)
{
    jw_key(w, "invoice_settings");
    jw_obj(w);
    nulls(w, (const char *const[]){"account_tax_ids", "custom_fields", NULL});
    if (with_days_until_due)
        jw_knull(w, "days_until_due");
    nulls(w, (const char *const[]){"description", "footer", NULL});
    issuer_self(w);
    jw_end(w);
}

/* The items [*from, *to) of a list kept in memory (an invoice's lines, a subscription's items),
 * in their own order, that a page asks for: cursors are ids of the items, item k's id at
 * ids + k * stride. False, with the error set, when a cursor is not one of them. */
static bool page_window(tg_req *req, const tg_page *page, const char *what, const char *ids,
                        size_t stride, size_t n, size_t *from, size_t *to, bool *more)
{
    *from = 0;
    *to = n;
    const char *cursor = page->starting_after ? page->starting_after : page->ending_before;
    if (cursor) {
        size_t k = 0;
        while (k < n && strcmp(ids + k * stride, cursor) != 0)
            k++;
        if (k == n) {
            tg_err_set(&req->err, TG_ENOTFOUND,
                       page->starting_after ? "starting_after" : "ending_before",
                       "No such %s: '%s'", what, cursor);
            return false;
        }
        if (page->starting_after)
            *from = k + 1;
        else
            *to = k;
    }
    *more = *to - *from > (size_t)page->limit;
    if (*more && page->ending_before)
        *from = *to - (size_t)page->limit;
    else if (*more)
        *to = *from + (size_t)page->limit;
    return true;
}

/* ================================================================ renderers */

/* Expanders (expand.h) of the ids these renderers write; defined after the renderers. */
static bool expand_customer(tg_req *req, const char *id);
static bool expand_invoice(tg_req *req, const char *id);
static bool expand_subscription(tg_req *req, const char *id);
static bool expand_schedule(tg_req *req, const char *id);
static bool expand_product(tg_req *req, const char *id);
static bool expand_price(tg_req *req, const char *id);

static void render_product(tg_jw *w, const tg_product *p)
{
    jw_obj(w);
    jw_kstr(w, "id", p->id);
    jw_kstr(w, "object", "product");
    jw_kbool(w, "active", p->active);
    jw_kint(w, "created", p->created);
    jw_knull(w, "default_price");
    jw_kstr(w, "description", p->description);
    empty_array(w, "images");
    jw_kbool(w, "livemode", p->livemode);
    empty_array(w, "marketing_features");
    jw_key(w, "metadata");
    tg_render_metadata(w, &p->metadata);
    jw_kstr(w, "name", p->name);
    jw_knull(w, "package_dimensions");
    jw_knull(w, "shippable");
    jw_knull(w, "statement_descriptor");
    jw_knull(w, "tax_code");
    jw_kstr(w, "type", "service");
    jw_knull(w, "unit_label");
    jw_kint(w, "updated", p->updated);
    jw_knull(w, "url");
    jw_end(w);
}

/* tiers_mode and the transform (transform_quantity of a price, transform_usage of a plan). */
static void tiers_mode_and_transform(tg_jw *w, const tg_price *p, const char *transform_key)
{
    bool tiered = p->pricing.scheme == TG_SCHEME_TIERED;
    jw_kstr(w, "tiers_mode", !tiered ? NULL
                             : p->pricing.tiers_mode == TG_TIERS_VOLUME ? "volume"
                                                                          : "graduated");
    if (p->pricing.divide_by) {
        jw_key(w, transform_key);
        jw_obj(w);
        jw_kint(w, "divide_by", p->pricing.divide_by);
        jw_kstr(w, "round", p->pricing.round_up ? "up" : "down");
        jw_end(w);
    } else {
        jw_knull(w, transform_key);
    }
}

static void render_price(tg_jw *w, const tg_price *p)
{
    jw_obj(w);
    jw_kstr(w, "id", p->id);
    jw_kstr(w, "object", "price");
    jw_kbool(w, "active", p->active);
    bool tiered = p->pricing.scheme == TG_SCHEME_TIERED;
    jw_kstr(w, "billing_scheme", tiered ? "tiered" : "per_unit");
    jw_kint(w, "created", p->created);
    jw_kstr(w, "currency", p->currency);
    jw_knull(w, "custom_unit_amount");
    jw_kbool(w, "livemode", p->livemode);
    jw_kstr(w, "lookup_key", p->lookup_key);
    jw_key(w, "metadata");
    tg_render_metadata(w, &p->metadata);
    jw_kstr(w, "nickname", p->nickname);
    tg_expand_ref(w, "product", p->product, expand_product);
    if (p->recurring) {
        jw_key(w, "recurring");
        jw_obj(w);
        jw_kstr(w, "interval", interval_words[p->interval]);
        jw_kint(w, "interval_count", p->interval_count);
        jw_kstr(w, "meter", p->metered ? p->meter : NULL);
        jw_kint_or_null(w, "trial_period_days", p->trial_period_days);
        jw_kstr(w, "usage_type", p->metered ? "metered" : "licensed");
        jw_end(w);
    } else {
        jw_knull(w, "recurring");
    }
    jw_kstr(w, "tax_behavior", "unspecified");
    if (tiered && tg_expand_wants(w, "tiers")) {
        jw_key(w, "tiers");
        jw_arr(w);
        for (size_t i = 0; i < p->pricing.ntiers; i++) {
            const tg_tier *t = &p->pricing.tiers[i];
            jw_obj(w);
            amount_pair(w, "flat_amount", "flat_amount_decimal", t->has_flat, t->flat_amount);
            amount_pair(w, "unit_amount", "unit_amount_decimal", t->has_unit, t->unit_amount);
            if (t->up_to_inf)
                jw_knull(w, "up_to");
            else
                jw_kint(w, "up_to", t->up_to);
            jw_end(w);
        }
        jw_aend(w);
    }
    tiers_mode_and_transform(w, p, "transform_quantity");
    jw_kstr(w, "type", p->recurring ? "recurring" : "one_time");
    amount_pair(w, "unit_amount", "unit_amount_decimal", !tiered && p->unit_amount_set,
                p->pricing.unit_amount);
    jw_end(w);
}

static void render_clock(tg_jw *w, const tg_test_clock *k)
{
    jw_obj(w);
    jw_kstr(w, "id", k->id);
    jw_kstr(w, "object", "test_helpers.test_clock");
    jw_kint(w, "created", k->created);
    jw_kint(w, "deletes_after", k->deletes_after);
    jw_kint(w, "frozen_time", k->frozen_time);
    jw_kbool(w, "livemode", false);
    jw_kstr(w, "name", k->name);
    jw_kstr(w, "status", k->status == TG_CLOCK_ADVANCING ? "advancing" : "ready");
    jw_key(w, "status_details");
    jw_obj(w);
    jw_end(w);
    jw_end(w);
}

/* A price as the legacy plan object subscription items still carry. */
static void render_plan(tg_jw *w, const tg_price *p)
{
    bool tiered = p->pricing.scheme == TG_SCHEME_TIERED;
    jw_obj(w);
    jw_kstr(w, "id", p->id);
    jw_kstr(w, "object", "plan");
    jw_kbool(w, "active", p->active);
    amount_pair(w, "amount", "amount_decimal", !tiered && p->unit_amount_set,
                p->pricing.unit_amount);
    jw_kstr(w, "billing_scheme", tiered ? "tiered" : "per_unit");
    jw_kint(w, "created", p->created);
    jw_kstr(w, "currency", p->currency);
    jw_kstr(w, "interval", interval_words[p->interval]);
    jw_kint(w, "interval_count", p->interval_count);
    jw_kbool(w, "livemode", p->livemode);
    jw_key(w, "metadata");
    tg_render_metadata(w, &p->metadata);
    jw_kstr(w, "meter", p->metered ? p->meter : NULL);
    jw_kstr(w, "nickname", p->nickname);
    jw_kstr(w, "product", p->product);
    tiers_mode_and_transform(w, p, "transform_usage");
    jw_kint_or_null(w, "trial_period_days", p->trial_period_days);
    jw_kstr(w, "usage_type", p->metered ? "metered" : "licensed");
    jw_end(w);
}

static void render_item(tg_jw *w, const tg_subscription *s, const tg_sub_item *it)
{
    jw_obj(w);
    jw_kstr(w, "id", it->id);
    jw_kstr(w, "object", "subscription_item");
    jw_knull(w, "billing_thresholds");
    jw_kint(w, "created", it->created);
    jw_kint(w, "current_period_end", s->period_end);
    jw_kint(w, "current_period_start", s->period_start);
    empty_array(w, "discounts");
    jw_key(w, "metadata");
    tg_render_metadata(w, &it->metadata);
    jw_key(w, "plan");
    render_plan(w, &it->price);
    jw_key(w, "price");
    tg_expand_enter(w, "price");
    render_price(w, &it->price);
    tg_expand_leave(w);
    if (!it->price.metered)
        jw_kint(w, "quantity", it->quantity);
    jw_kstr(w, "subscription", s->id);
    empty_array(w, "tax_rates");
    jw_end(w);
}

static void render_subscription(tg_jw *w, const tg_subscription *s)
{
    static const char *const trial_words[] = {"create_invoice", "cancel", "pause"};
    jw_obj(w);
    jw_kstr(w, "id", s->id);
    jw_kstr(w, "object", "subscription");
    nulls(w, (const char *const[]){"application", "application_fee_percent", NULL});
    automatic_tax_off(w, false);
    jw_kint(w, "billing_cycle_anchor", s->billing_cycle_anchor);
    if (s->anchor_day > 0) {
        jw_key(w, "billing_cycle_anchor_config");
        jw_obj(w);
        jw_kint(w, "day_of_month", s->anchor_day);
        jw_kint_or_null(w, "hour", s->anchor_hour >= 0 ? s->anchor_hour : 0);
        jw_kint_or_null(w, "minute", s->anchor_minute >= 0 ? s->anchor_minute : 0);
        jw_kint_or_null(w, "month", s->anchor_month > 0 ? s->anchor_month : 0);
        jw_kint_or_null(w, "second", s->anchor_second >= 0 ? s->anchor_second : 0);
        jw_end(w);
    } else {
        jw_knull(w, "billing_cycle_anchor_config");
    }
    billing_mode_classic(w);
    empty_array(w, "billing_schedules");
    jw_knull(w, "billing_thresholds");
    jw_kint_or_null(w, "cancel_at", s->cancel_at);
    jw_kbool(w, "cancel_at_period_end", s->cancel_at_period_end);
    jw_kint_or_null(w, "canceled_at", s->canceled_at);
    jw_key(w, "cancellation_details");
    jw_obj(w);
    jw_kstr(w, "comment", s->cancellation_comment);
    jw_kstr(w, "feedback", s->cancellation_feedback);
    jw_kstr(w, "reason", s->canceled_at ? (s->cancellation_reason ? s->cancellation_reason
                                                                   : "cancellation_requested")
                                        : NULL);
    jw_end(w);
    jw_kstr(w, "collection_method", s->send_invoice ? "send_invoice" : "charge_automatically");
    jw_kint(w, "created", s->created);
    jw_kstr(w, "currency", s->currency);
    tg_expand_ref(w, "customer", s->customer, expand_customer);
    jw_knull(w, "customer_account");
    if (s->send_invoice)
        jw_kint(w, "days_until_due", s->days_until_due);
    else
        jw_knull(w, "days_until_due");
    jw_kstr(w, "default_payment_method", s->default_payment_method);
    jw_knull(w, "default_source");
    jw_kstr(w, "description", s->description);
    empty_array(w, "discounts");
    jw_kint_or_null(w, "ended_at", s->ended_at);
    jw_key(w, "items");
    jw_obj(w);
    jw_kstr(w, "object", "list");
    jw_key(w, "data");
    jw_arr(w);
    tg_expand_enter(w, "items.data");
    for (size_t i = 0; i < s->nitems; i++)
        render_item(w, s, &s->items[i]);
    tg_expand_leave(w);
    jw_aend(w);
    jw_kbool(w, "has_more", false);
    jw_kint(w, "total_count", (int64_t)s->nitems);
    char url[160];
    snprintf(url, sizeof url, "/v1/subscription_items?subscription=%s", s->id);
    jw_kstr(w, "url", url);
    jw_end(w);
    invoice_settings(w, false);
    tg_expand_ref(w, "latest_invoice", s->latest_invoice, expand_invoice);
    jw_kbool(w, "livemode", s->livemode);
    jw_knull(w, "managed_payments");
    jw_key(w, "metadata");
    tg_render_metadata(w, &s->metadata);
    nulls(w, (const char *const[]){"next_pending_invoice_item_invoice", "on_behalf_of",
                                  "pause_collection", "payment_settings",
                                  "pending_invoice_item_interval", "pending_setup_intent",
                                  "pending_update", NULL});
    tg_expand_ref(w, "schedule", s->schedule, expand_schedule);
    jw_kint(w, "start_date", s->start_date);
    jw_kstr(w, "status", tg_sub_status_words[s->status]);
    tg_expand_ref(w, "test_clock", s->test_clock, tg_expand_test_clock);
    jw_knull(w, "transfer_data");
    jw_kint_or_null(w, "trial_end", s->trial_end);
    jw_key(w, "trial_settings");
    jw_obj(w);
    jw_key(w, "end_behavior");
    jw_obj(w);
    jw_kstr(w, "missing_payment_method", trial_words[s->trial_end_behavior]);
    jw_end(w);
    jw_end(w);
    jw_kint_or_null(w, "trial_start", s->trial_start);
    jw_end(w);
}

static void render_line(tg_jw *w, const tg_invoice *v, const tg_invoice_line *l)
{
    jw_obj(w);
    jw_kstr(w, "id", l->id);
    jw_kstr(w, "object", "line_item");
    jw_kint(w, "amount", l->amount);
    jw_kstr(w, "currency", v->currency);
    jw_kstr(w, "description", l->description);
    empty_array(w, "discount_amounts");
    jw_kbool(w, "discountable", !l->proration);
    empty_array(w, "discounts");
    jw_kstr(w, "invoice", v->id);
    jw_kbool(w, "livemode", v->livemode);
    jw_key(w, "metadata");
    jw_obj(w);
    jw_end(w);
    jw_key(w, "parent");
    jw_obj(w);
    jw_knull(w, "invoice_item_details");
    jw_key(w, "subscription_item_details");
    jw_obj(w);
    jw_knull(w, "invoice_item");
    jw_kbool(w, "proration", l->proration);
    jw_key(w, "proration_details");
    jw_obj(w);
    jw_knull(w, "credited_items");
    jw_end(w);
    jw_kstr(w, "subscription", v->subscription);
    jw_kstr(w, "subscription_item", l->subscription_item[0] ? l->subscription_item : NULL);
    jw_end(w);
    jw_kstr(w, "type", "subscription_item_details");
    jw_end(w);
    jw_key(w, "period");
    jw_obj(w);
    jw_kint(w, "end", l->period_end);
    jw_kint(w, "start", l->period_start);
    jw_end(w);
    empty_array(w, "pretax_credit_amounts");
    jw_key(w, "pricing");
    jw_obj(w);
    jw_key(w, "price_details");
    jw_obj(w);
    tg_expand_enter(w, "pricing.price_details");
    tg_expand_ref(w, "price", l->price, expand_price);
    tg_expand_leave(w);
    jw_kstr(w, "product", l->product);
    jw_end(w);
    jw_kstr(w, "type", "price_details");
    if (l->unit_amount_set)
        dec_string(w, "unit_amount_decimal", l->unit_amount);
    else
        jw_knull(w, "unit_amount_decimal");
    jw_end(w);
    /* quantity is a 64-bit integer; beyond it only quantity_decimal can say the usage. */
    tg_dec whole = l->quantity / TG_DEC_ONE;
    if (whole > INT64_MAX || whole < INT64_MIN)
        jw_knull(w, "quantity");
    else
        jw_kint(w, "quantity", (int64_t)whole);
    dec_string(w, "quantity_decimal", l->quantity);
    jw_kstr(w, "subscription", v->subscription[0] ? v->subscription : NULL);
    jw_kint(w, "subtotal", l->amount);
    empty_array(w, "taxes");
    jw_end(w);
}

static void render_invoice(tg_jw *w, const tg_invoice *v)
{
    jw_obj(w);
    jw_kstr(w, "id", v->id);
    jw_kstr(w, "object", "invoice");
    nulls(w, (const char *const[]){"account_country", "account_name", "account_tax_ids", NULL});
    jw_kint(w, "amount_due", v->amount_due);
    jw_kint(w, "amount_overpaid", 0);
    jw_kint(w, "amount_paid", v->amount_paid);
    jw_kint(w, "amount_remaining", v->amount_remaining);
    jw_kint(w, "amount_shipping", 0);
    jw_knull(w, "application");
    jw_kint(w, "attempt_count", 0);
    jw_kbool(w, "attempted", false);
    jw_kbool(w, "auto_advance", v->auto_advance);
    automatic_tax_off(w, true);
    jw_kint_or_null(w, "automatically_finalizes_at", v->automatically_finalizes_at);
    jw_kstr(w, "billing_reason", reason_words[v->billing_reason]);
    jw_kstr(w, "collection_method", v->send_invoice ? "send_invoice" : "charge_automatically");
    jw_kint(w, "created", v->created);
    jw_kstr(w, "currency", v->currency);
    nulls(w, (const char *const[]){"custom_fields", NULL});
    tg_expand_ref(w, "customer", v->customer, expand_customer);
    jw_knull(w, "customer_account");
    tg_render_contact(w, &v->customer_contact, "customer_address", "customer_phone",
                      "customer_shipping");
    jw_kstr(w, "customer_email", v->customer_email);
    jw_kstr(w, "customer_name", v->customer_name);
    jw_kstr(w, "customer_tax_exempt", "none");
    nulls(w, (const char *const[]){"default_payment_method", "default_source", NULL});
    empty_array(w, "default_tax_rates");
    jw_knull(w, "description");
    empty_array(w, "discounts");
    jw_kint_or_null(w, "due_date", v->due_date);
    jw_kint_or_null(w, "effective_at", v->finalized_at);
    /* There is no customer balance: 0 once finalized, null before, as on Stripe. */
    if (v->status == TG_INV_DRAFT || v->billing_reason == TG_REASON_UPCOMING)
        jw_knull(w, "ending_balance");
    else
        jw_kint(w, "ending_balance", 0);
    nulls(w, (const char *const[]){"footer", "from_invoice", "hosted_invoice_url", NULL});
    issuer_self(w);
    nulls(w, (const char *const[]){"last_finalization_error", "latest_revision", NULL});
    jw_key(w, "lines");
    jw_obj(w);
    jw_kstr(w, "object", "list");
    jw_key(w, "data");
    jw_arr(w);
    /* The first ten lines, the rest at the url; a preview is not stored, so it has them all. */
    size_t shown = v->billing_reason == TG_REASON_UPCOMING || v->nlines < 10 ? v->nlines : 10;
    tg_expand_enter(w, "lines.data");
    for (size_t i = 0; i < shown; i++)
        render_line(w, v, &v->lines[i]);
    tg_expand_leave(w);
    jw_aend(w);
    jw_kbool(w, "has_more", v->nlines > shown);
    jw_kint(w, "total_count", (int64_t)v->nlines);
    char url[160];
    snprintf(url, sizeof url, "/v1/invoices/%s/lines", v->id);
    jw_kstr(w, "url", url);
    jw_end(w);
    jw_kbool(w, "livemode", v->livemode);
    jw_key(w, "metadata");
    tg_render_metadata(w, &v->metadata);
    jw_knull(w, "next_payment_attempt");
    jw_kstr(w, "number", v->number[0] ? v->number : NULL);
    jw_knull(w, "on_behalf_of");
    if (v->subscription[0]) {
        jw_key(w, "parent");
        jw_obj(w);
        jw_knull(w, "quote_details");
        jw_key(w, "subscription_details");
        jw_obj(w);
        jw_key(w, "metadata");
        jw_obj(w);
        jw_end(w);
        tg_expand_enter(w, "parent.subscription_details");
        tg_expand_ref(w, "subscription", v->subscription, expand_subscription);
        tg_expand_leave(w);
        jw_end(w);
        jw_kstr(w, "type", "subscription_details");
        jw_end(w);
    } else {
        jw_knull(w, "parent");
    }
    jw_key(w, "payment_settings");
    jw_obj(w);
    nulls(w, (const char *const[]){"default_mandate", "payment_method_options",
                                  "payment_method_types", NULL});
    jw_end(w);
    jw_kint(w, "period_end", v->period_end);
    jw_kint(w, "period_start", v->period_start);
    jw_kint(w, "post_payment_credit_notes_amount", 0);
    jw_kint(w, "pre_payment_credit_notes_amount", 0);
    nulls(w, (const char *const[]){"receipt_number", "rendering", "shipping_cost",
                                  "shipping_details", NULL});
    jw_kint(w, "starting_balance", 0);
    jw_knull(w, "statement_descriptor");
    jw_kstr(w, "status", tg_inv_status_words[v->status]);
    jw_key(w, "status_transitions");
    jw_obj(w);
    jw_kint_or_null(w, "finalized_at", v->finalized_at);
    jw_kint_or_null(w, "marked_uncollectible_at", v->marked_uncollectible_at);
    jw_kint_or_null(w, "paid_at", v->paid_at);
    jw_kint_or_null(w, "voided_at", v->voided_at);
    jw_end(w);
    jw_kint(w, "subtotal", v->subtotal);
    jw_kint(w, "subtotal_excluding_tax", v->subtotal);
    tg_expand_ref(w, "test_clock", v->test_clock, tg_expand_test_clock);
    jw_kint(w, "total", v->total);
    empty_array(w, "total_discount_amounts");
    jw_kint(w, "total_excluding_tax", v->total);
    empty_array(w, "total_pretax_credit_amounts");
    empty_array(w, "total_taxes");
    jw_knull(w, "webhooks_delivered_at");
    jw_end(w);
}

static void render_event_object(tg_jw *w, tg_obj_kind kind, const tg_event_object *o,
                                bool livemode)
{
    switch (kind) {
    case TG_OBJ_PRODUCT: render_product(w, &o->product); break;
    case TG_OBJ_PRICE: render_price(w, &o->price); break;
    case TG_OBJ_TEST_CLOCK: render_clock(w, &o->clock); break;
    case TG_OBJ_SUBSCRIPTION: render_subscription(w, &o->sub); break;
    case TG_OBJ_INVOICE: render_invoice(w, &o->invoice); break;
    case TG_OBJ_FEATURE: tg_render_feature(w, &o->feature); break;
    case TG_OBJ_CUSTOMER: tg_render_customer(w, &o->customer); break;
    case TG_OBJ_METER: tg_render_meter(w, &o->meter); break;
    case TG_OBJ_ENTITLEMENT_SUMMARY: tg_render_entitlement_summary(w, &o->summary, livemode); break;
    }
}

/* The top-level members of a JSON object this server wrote (no whitespace, valid), at most
 * cap of them, into out: each one's key and its value's text. */
typedef struct json_member {
    const char *key, *value;
    size_t key_len, value_len;
} json_member;

static size_t json_members(const char *s, size_t len, json_member *out, size_t cap)
{
    size_t n = 0, i = 1; /* past '{' */
    while (i < len && s[i] == '"' && n < cap) {
        json_member *m = &out[n++];
        m->key = s + ++i;
        while (s[i] != '"')
            i += s[i] == '\\' ? 2 : 1;
        m->key_len = (size_t)(s + i - m->key);
        i += 2; /* the quote and the colon */
        m->value = s + i;
        int depth = 0;
        for (bool in_str = false; i < len; i++) {
            char ch = s[i];
            if (in_str) {
                if (ch == '\\')
                    i++;
                else if (ch == '"')
                    in_str = false;
            } else if (ch == '"') {
                in_str = true;
            } else if (ch == '{' || ch == '[') {
                depth++;
            } else if (ch == '}' || ch == ']') {
                if (depth-- == 0)
                    break;
            } else if (ch == ',' && depth == 0) {
                break;
            }
        }
        m->value_len = (size_t)(s + i - m->value);
        i++; /* the comma or the closing brace */
    }
    return n;
}

/* Writes, as members of the object being written, what changed between two JSON objects this
 * server wrote (now, before): each member whose value differs, with its value before; a
 * member only now has is null, one only before had keeps its value. Where both values are
 * objects (metadata, an address), only their changed members are written, as Stripe does:
 * adding metadata[order_id] shows {"metadata":{"order_id":null}}. Arrays and scalars are
 * written whole. */
static void write_changes(tg_jw *w, const char *now, size_t now_len, const char *before,
                          size_t before_len)
{
    json_member a[128], b[128];
    size_t na = json_members(now, now_len, a, 128);
    size_t nb = json_members(before, before_len, b, 128);
    bool seen[128] = {false};
    for (size_t i = 0; i < na; i++) {
        size_t k = 0;
        while (k < nb && (b[k].key_len != a[i].key_len || memcmp(b[k].key, a[i].key, a[i].key_len)))
            k++;
        if (k < nb)
            seen[k] = true;
        if (k < nb && b[k].value_len == a[i].value_len &&
            memcmp(b[k].value, a[i].value, a[i].value_len) == 0)
            continue;
        jw_key_escaped(w, a[i].key, a[i].key_len);
        if (k == nb) {
            jw_null(w);
        } else if (a[i].value[0] == '{' && b[k].value[0] == '{') {
            jw_obj(w);
            write_changes(w, a[i].value, a[i].value_len, b[k].value, b[k].value_len);
            jw_end(w);
        } else {
            jw_rawn(w, b[k].value, b[k].value_len);
        }
    }
    for (size_t k = 0; k < nb; k++) {
        if (seen[k])
            continue;
        jw_key_escaped(w, b[k].key, b[k].key_len);
        jw_rawn(w, b[k].value, b[k].value_len);
    }
}

/* data.previous_attributes: what the event changed in its object, with the values before. */
static void previous_attributes(tg_jw *w, const tg_billing_event *e)
{
    tg_buf now, before;
    tg_buf_init(&now, 16u << 20);
    tg_buf_init(&before, 16u << 20);
    tg_jw wn, wb; /* no request: nothing in them is expanded */
    jw_init(&wn, &now);
    jw_init(&wb, &before);
    render_event_object(&wn, e->kind, &e->object, e->livemode);
    render_event_object(&wb, e->kind, &e->previous, e->livemode);
    jw_key(w, "previous_attributes");
    jw_obj(w);
    if (!now.failed && !before.failed)
        write_changes(w, now.data, now.len, before.data, before.len);
    jw_end(w);
    tg_buf_free(&now);
    tg_buf_free(&before);
}

void tg_render_event(tg_jw *w, const tg_billing_event *e)
{
    jw_obj(w);
    jw_kstr(w, "id", e->id);
    jw_kstr(w, "object", "event");
    jw_kstr(w, "api_version", TG_STRIPE_VERSION);
    jw_kint(w, "created", e->created);
    jw_key(w, "data");
    jw_obj(w);
    jw_key(w, "object");
    render_event_object(w, e->kind, &e->object, e->livemode);
    if (e->has_previous)
        previous_attributes(w, e);
    jw_end(w);
    jw_kbool(w, "livemode", e->livemode);
    jw_kint(w, "pending_webhooks", e->pending_webhooks);
    jw_key(w, "request");
    jw_obj(w);
    jw_kstr(w, "id", e->request_id);
    jw_kstr(w, "idempotency_key", e->idempotency_key);
    jw_end(w);
    jw_kstr(w, "type", e->type);
    jw_end(w);
}

/* A schedule's phase: its fields before items (opened, up to "items": [), its items, then the
 * fields after them (closing it). */
static void phase_begin(tg_jw *w, const tg_subscription *s, int64_t end_date)
{
    jw_obj(w);
    empty_array(w, "add_invoice_items");
    nulls(w, (const char *const[]){"application_fee_percent", "billing_cycle_anchor",
                                  "billing_thresholds", NULL});
    jw_kstr(w, "collection_method", s->send_invoice ? "send_invoice" : "charge_automatically");
    jw_kstr(w, "currency", s->currency);
    nulls(w, (const char *const[]){"default_payment_method", "description", NULL});
    empty_array(w, "discounts");
    jw_kint(w, "end_date", end_date);
    jw_knull(w, "invoice_settings");
    jw_key(w, "items");
    jw_arr(w);
}

static void phase_item(tg_jw *w, const char *price, bool with_quantity, int64_t quantity)
{
    jw_obj(w);
    jw_knull(w, "billing_thresholds");
    empty_array(w, "discounts");
    jw_key(w, "metadata");
    jw_obj(w);
    jw_end(w);
    jw_kstr(w, "plan", price);
    jw_kstr(w, "price", price);
    if (with_quantity)
        jw_kint(w, "quantity", quantity);
    empty_array(w, "tax_rates");
    jw_end(w);
}

static void phase_end(tg_jw *w, int64_t start_date)
{
    jw_aend(w);
    jw_key(w, "metadata");
    jw_obj(w);
    jw_end(w);
    jw_knull(w, "on_behalf_of");
    jw_kstr(w, "proration_behavior", "create_prorations");
    jw_kint(w, "start_date", start_date);
    jw_knull(w, "transfer_data");
    jw_knull(w, "trial_end");
    jw_end(w);
}

/* A schedule shows its subscription's items and period as its current phase (as they are now,
 * or were when it ended), and its next phase if it has one. */
static void render_schedule(tg_jw *w, const tg_sub_schedule *k)
{
    static const char *const status_words[] = {"active", "released", "canceled"};
    const tg_subscription *s = &k->sub;
    bool released = k->status == TG_SCHED_RELEASED;
    jw_obj(w);
    jw_kstr(w, "id", k->id);
    jw_kstr(w, "object", "subscription_schedule");
    jw_knull(w, "application");
    billing_mode_classic(w);
    jw_kint_or_null(w, "canceled_at", k->canceled_at);
    jw_knull(w, "completed_at");
    jw_kint(w, "created", k->created);
    if (k->ended) {
        jw_knull(w, "current_phase");
    } else {
        jw_key(w, "current_phase");
        jw_obj(w);
        jw_kint(w, "end_date", s->period_end);
        jw_kint(w, "start_date", s->period_start);
        jw_end(w);
    }
    tg_expand_ref(w, "customer", s->customer, expand_customer);
    jw_knull(w, "customer_account");
    jw_key(w, "default_settings");
    jw_obj(w);
    jw_knull(w, "application_fee_percent");
    jw_kstr(w, "billing_cycle_anchor", "automatic");
    jw_knull(w, "billing_thresholds");
    jw_kstr(w, "collection_method", s->send_invoice ? "send_invoice" : "charge_automatically");
    nulls(w, (const char *const[]){"default_payment_method", "description", NULL});
    invoice_settings(w, true);
    nulls(w, (const char *const[]){"on_behalf_of", "transfer_data", NULL});
    jw_end(w);
    jw_kstr(w, "end_behavior", "release");
    jw_kbool(w, "livemode", s->livemode);
    jw_key(w, "metadata");
    tg_render_metadata(w, &s->schedule_metadata);
    jw_key(w, "phases");
    jw_arr(w);
    phase_begin(w, s, s->period_end);
    for (size_t i = 0; i < s->nitems; i++)
        phase_item(w, s->items[i].price.id, !s->items[i].price.metered, s->items[i].quantity);
    phase_end(w, s->period_start);
    if (s->next_phase.set) {
        /* One period from the renewal it starts at (iterations=1), then released. */
        int64_t start, end;
        tg_period_containing(s->billing_cycle_anchor, s->interval, s->interval_count,
                             s->anchor_day, s->next_phase.start, &start, &end);
        phase_begin(w, s, end);
        for (size_t i = 0; i < s->next_phase.nitems; i++)
            phase_item(w, s->next_phase.items[i].price, s->next_phase.items[i].quantity != 0,
                       s->next_phase.items[i].quantity);
        phase_end(w, s->next_phase.start);
    }
    jw_aend(w);
    jw_kint_or_null(w, "released_at", k->released_at);
    jw_kstr(w, "released_subscription", released ? k->subscription : NULL);
    jw_kstr(w, "status", status_words[k->status]);
    tg_expand_ref(w, "subscription", released ? NULL : k->subscription, expand_subscription);
    tg_expand_ref(w, "test_clock", s->test_clock, tg_expand_test_clock);
    jw_end(w);
}

/* The expanders: each loads its object (at the request's time and scope) and renders it. */
#define EXPANDER(name, type, retrieve, render)                                                \
    bool name(tg_req *req, const char *id)                                                   \
    {                                                                                         \
        type o;                                                                               \
        if (retrieve(req->svc, &req->scope, id, &req->arena, &o, &req->err))                  \
            return false;                                                                     \
        render(&req->jw, &o);                                                                 \
        return true;                                                                          \
    }
static EXPANDER(expand_customer, tg_customer, tg_customer_retrieve, tg_render_customer)
static EXPANDER(expand_invoice, tg_invoice, tg_invoice_retrieve, render_invoice)
static EXPANDER(expand_subscription, tg_subscription, tg_subscription_retrieve,
                render_subscription)
static EXPANDER(expand_product, tg_product, tg_product_retrieve, render_product)
static EXPANDER(expand_price, tg_price, tg_price_retrieve, render_price)
static EXPANDER(expand_schedule, tg_sub_schedule, tg_schedule_retrieve, render_schedule)
EXPANDER(tg_expand_test_clock, tg_test_clock, tg_test_clock_retrieve, render_clock)
#undef EXPANDER

/* ================================================================ products */

static bool product_patch(tg_req *req, bool create, tg_product_patch *p)
{
    memset(p, 0, sizeof *p);
    p->active = -1;
    bool active;
    if (create)
        p_str(req, NULL, "id", NULL, 60, &p->id);
    p_opt_str(req, NULL, "name", 250, &p->name);
    p_opt_str(req, NULL, "description", 40000, &p->description);
    if (p_bool(req, NULL, "active", NULL, &active))
        p->active = active;
    p_string_map(req, NULL, "metadata", true, &p->metadata, &p->metadata_clear);
    p_expand(req, "product");
    return tg_req_params_done(req);
}

static int product_reply(tg_req *req, int rc, const tg_product *p)
{
    if (rc)
        return tg_reply_error(req);
    render_product(&req->jw, p);
    return 200;
}

static int h_product_create(tg_req *req)
{
    tg_product_patch pp;
    tg_product p;
    if (!product_patch(req, true, &pp))
        return tg_reply_error(req);
    return product_reply(req, tg_product_create(req->svc, &req->scope, &pp, &req->arena, &p,
                                                &req->err), &p);
}

static int h_product_update(tg_req *req)
{
    tg_product_patch pp;
    tg_product p;
    if (!product_patch(req, false, &pp))
        return tg_reply_error(req);
    return product_reply(req, tg_product_update(req->svc, &req->scope, tg_seg(req, 2), &pp,
                                                &req->arena, &p, &req->err), &p);
}

static int h_product_retrieve(tg_req *req)
{
    tg_product p;
    p_expand(req, "product");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    return product_reply(req, tg_product_retrieve(req->svc, &req->scope, tg_seg(req, 2),
                                                  &req->arena, &p, &req->err), &p);
}

static int h_product_delete(tg_req *req)
{
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    if (tg_product_delete(req->svc, &req->scope, tg_seg(req, 2), &req->err))
        return tg_reply_error(req);
    return tg_reply_deleted(req, tg_seg(req, 2), "product");
}

static bool catalog_filter(tg_req *req, tg_catalog_filter *f)
{
    memset(f, 0, sizeof *f);
    f->active = -1;
    f->recurring = -1;
    bool active;
    if (p_bool(req, NULL, "active", NULL, &active))
        f->active = active;
    p_created(req, &f->created);
    return !tg_req_failed(req);
}

static int h_product_list(tg_req *req)
{
    tg_page page;
    tg_catalog_filter f;
    if (!p_page(req, &page, "product") || !catalog_filter(req, &f) || !tg_req_params_done(req))
        return tg_reply_error(req);
    tg_product *items;
    size_t n;
    bool more;
    if (tg_product_list(req->svc, &req->scope, &f, &page, &req->arena, &items, &n, &more,
                        &req->err))
        return tg_reply_error(req);
    tg_list_begin(req, "/v1/products");
    for (size_t i = 0; i < n; i++)
        render_product(&req->jw, &items[i]);
    tg_list_end(req, more);
    return 200;
}

/* ================================================================ prices */

/* An amount given as an integer `key` or a decimal string `key`_decimal (exclusive); tier >= 0
 * names it inside tiers[tier]. */
static bool read_amount(tg_req *req, tg_param *parent, const char *key, int tier, bool *set,
                        tg_dec *out)
{
    char name_dec[48], path[80], path_dec[96];
    snprintf(name_dec, sizeof name_dec, "%s_decimal", key);
    if (tier >= 0) {
        snprintf(path, sizeof path, "tiers[%d][%s]", tier, key);
        snprintf(path_dec, sizeof path_dec, "tiers[%d][%s]", tier, name_dec);
    } else {
        snprintf(path, sizeof path, "%s", key);
        snprintf(path_dec, sizeof path_dec, "%s", name_dec);
    }
    int64_t whole;
    bool has_int = p_int(req, parent, key, path, 0, 99999999999LL, &whole);
    tg_dec d;
    bool has_dec = p_dec(req, parent, name_dec, path_dec, &d);
    if (tg_req_failed(req))
        return false;
    if (has_int && has_dec) {
        tg_err_set(&req->err, TG_EEXCLUSIVE, path,
                   "Only one of %s and %s can be set.", path, path_dec);
        return false;
    }
    *set = has_int || has_dec;
    *out = has_int ? tg_dec_from_int(whole) : has_dec ? d : 0;
    return true;
}

static bool read_tiers(tg_req *req, tg_price *p)
{
    tg_param *t = tg_param_get(req->params, "tiers");
    if (!t)
        return true;
    if (t->kind == TG_PARAM_STRING || t->count == 0 || t->count > TG_TIERS_MAX) {
        tg_err_set(&req->err, TG_EINVAL, "tiers", "Invalid tiers: 1 to %d tiers.", TG_TIERS_MAX);
        return false;
    }
    tg_tier *tiers = tg_arena_alloc(&req->arena, t->count * sizeof *tiers);
    if (!tiers) {
        tg_err_set(&req->err, TG_ENOMEM, NULL, NULL);
        return false;
    }
    size_t n = 0;
    for (tg_param *e = t->first; e; e = e->next, n++) {
        e->used = true;
        tg_tier *tier = &tiers[n];
        memset(tier, 0, sizeof *tier);
        if (e->kind != TG_PARAM_HASH) {
            tg_err_set(&req->err, TG_EINVAL, "tiers", "Invalid tiers: each tier is a hash.");
            return false;
        }
        char path[48];
        snprintf(path, sizeof path, "tiers[%zu][up_to]", n);
        const char *up_to;
        if (!p_str_required(req, e, "up_to", path, 20, &up_to))
            return false;
        if (strcmp(up_to, "inf") == 0) {
            tier->up_to_inf = true;
        } else if (!p_int(req, e, "up_to", path, 1, INT64_MAX / 4, &tier->up_to)) {
            return false;
        }
        bool ok = read_amount(req, e, "unit_amount", (int)n, &tier->has_unit,
                              &tier->unit_amount) &&
                  read_amount(req, e, "flat_amount", (int)n, &tier->has_flat,
                              &tier->flat_amount);
        if (!ok)
            return false;
    }
    p->pricing.tiers = tiers;
    p->pricing.ntiers = n;
    return true;
}

static int h_price_create(tg_req *req)
{
    tg_price spec;
    memset(&spec, 0, sizeof spec);
    spec.active = true;
    const char *currency = NULL, *product = NULL, *product_name = NULL;
    bool transfer = false, active;
    p_str_required(req, NULL, "currency", NULL, 3, &currency);
    p_str(req, NULL, "product", NULL, 255, &product);
    tg_param *pd = tg_param_get(req->params, "product_data");
    if (pd && !tg_req_failed(req)) {
        if (pd->kind != TG_PARAM_HASH)
            tg_err_set(&req->err, TG_EINVAL, "product_data", "Invalid product_data: a hash.");
        else
            p_str_required(req, pd, "name", "product_data[name]", 250, &product_name);
    }
    if (product && product_name)
        tg_err_set(&req->err, TG_EEXCLUSIVE, "product",
                   "Only one of product and product_data can be set.");
    if (p_bool(req, NULL, "active", NULL, &active))
        spec.active = active;
    static const char *const schemes[] = {"per_unit", "tiered", NULL};
    static const char *const modes[] = {"graduated", "volume", NULL};
    int scheme = 0, mode = -1;
    p_enum(req, NULL, "billing_scheme", NULL, schemes, &scheme);
    p_enum(req, NULL, "tiers_mode", NULL, modes, &mode);
    spec.pricing.scheme = (tg_billing_scheme)scheme;
    read_amount(req, NULL, "unit_amount", -1, &spec.unit_amount_set, &spec.pricing.unit_amount);
    read_tiers(req, &spec);
    tg_param *tq = tg_param_get(req->params, "transform_quantity");
    if (tq && !tg_req_failed(req)) {
        static const char *const rounds[] = {"down", "up", NULL};
        int round = -1;
        if (!p_int(req, tq, "divide_by", "transform_quantity[divide_by]", 1, 1000000000,
                   &spec.pricing.divide_by) && !tg_req_failed(req))
            tg_err_set(&req->err, TG_EMISSING, "transform_quantity[divide_by]",
                       "Missing required param: transform_quantity[divide_by].");
        if (!p_enum(req, tq, "round", "transform_quantity[round]", rounds, &round) &&
            !tg_req_failed(req))
            tg_err_set(&req->err, TG_EMISSING, "transform_quantity[round]",
                       "Missing required param: transform_quantity[round].");
        spec.pricing.round_up = round == 1;
    }
    tg_param *rec = tg_param_get(req->params, "recurring");
    if (rec && !tg_req_failed(req)) {
        static const char *const usage[] = {"licensed", "metered", NULL};
        int interval = -1, usage_type = 0;
        int64_t count = 1;
        const char *meter = NULL;
        spec.recurring = true;
        if (!p_enum(req, rec, "interval", "recurring[interval]", interval_words, &interval) &&
            !tg_req_failed(req))
            tg_err_set(&req->err, TG_EMISSING, "recurring[interval]",
                       "Missing required param: recurring[interval].");
        p_int(req, rec, "interval_count", "recurring[interval_count]", 1, 1095, &count);
        p_enum(req, rec, "usage_type", "recurring[usage_type]", usage, &usage_type);
        p_str(req, rec, "meter", "recurring[meter]", 255, &meter);
        p_int(req, rec, "trial_period_days", "recurring[trial_period_days]", 1, 730,
              &spec.trial_period_days);
        if (!tg_req_failed(req)) {
            spec.interval = (tg_interval)interval;
            spec.interval_count = (int)count;
            spec.metered = usage_type == 1;
            if (!tg_interval_count_ok(spec.interval, count))
                tg_err_set(&req->err, TG_EINVAL, "recurring[interval_count]",
                           "The billing interval can be at most three years.");
            else if (spec.metered && !meter)
                tg_err_set(&req->err, TG_EMISSING, "recurring[meter]",
                           "A metered price needs a meter: recurring[meter].");
            else if (!spec.metered && meter)
                tg_err_set(&req->err, TG_EINVAL, "recurring[meter]",
                           "Only metered prices (recurring[usage_type]=metered) have a meter.");
            if (meter)
                tg_strlcpy(spec.meter, meter, sizeof spec.meter);
        }
    }
    p_str(req, NULL, "lookup_key", NULL, 200, &spec.lookup_key);
    p_bool(req, NULL, "transfer_lookup_key", NULL, &transfer);
    p_str(req, NULL, "nickname", NULL, 250, &spec.nickname);
    p_string_map(req, NULL, "metadata", false, &spec.metadata, NULL);
    p_expand(req, "price");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    /* The scheme's own rules. */
    if (spec.pricing.scheme == TG_SCHEME_TIERED) {
        if (spec.unit_amount_set)
            tg_err_set(&req->err, TG_EINVAL, "unit_amount",
                       "A tiered price takes its amounts from tiers, not unit_amount.");
        else if (!spec.pricing.ntiers)
            tg_err_set(&req->err, TG_EMISSING, "tiers", "A tiered price needs tiers.");
        else if (mode < 0)
            tg_err_set(&req->err, TG_EMISSING, "tiers_mode", "A tiered price needs tiers_mode.");
        else if (spec.pricing.divide_by)
            tg_err_set(&req->err, TG_EINVAL, "transform_quantity",
                       "transform_quantity cannot be combined with tiers.");
        spec.pricing.tiers_mode = mode == 1 ? TG_TIERS_VOLUME : TG_TIERS_GRADUATED;
    } else {
        if (spec.pricing.ntiers)
            tg_err_set(&req->err, TG_EINVAL, "tiers", "Tiers need billing_scheme=tiered.");
        else if (mode >= 0)
            tg_err_set(&req->err, TG_EINVAL, "tiers_mode",
                       "tiers_mode needs billing_scheme=tiered.");
        else if (!spec.unit_amount_set)
            tg_err_set(&req->err, TG_EMISSING, "unit_amount",
                       "Missing required param: unit_amount (or unit_amount_decimal).");
    }
    if (tg_req_failed(req))
        return tg_reply_error(req);
    tg_strlcpy(spec.currency, currency, sizeof spec.currency);
    for (char *c = spec.currency; *c; c++)
        *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
    if (product)
        tg_strlcpy(spec.product, product, sizeof spec.product);
    tg_price p;
    if (tg_price_create(req->svc, &req->scope, &spec, product_name, transfer, &req->arena, &p,
                        &req->err))
        return tg_reply_error(req);
    render_price(&req->jw, &p);
    return 200;
}

static int h_price_update(tg_req *req)
{
    tg_price_patch u;
    memset(&u, 0, sizeof u);
    u.active = -1;
    bool active;
    if (p_bool(req, NULL, "active", NULL, &active))
        u.active = active;
    p_opt_str(req, NULL, "lookup_key", 200, &u.lookup_key);
    p_opt_str(req, NULL, "nickname", 250, &u.nickname);
    p_bool(req, NULL, "transfer_lookup_key", NULL, &u.transfer_lookup_key);
    p_string_map(req, NULL, "metadata", true, &u.metadata, &u.metadata_clear);
    p_expand(req, "price");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_price p;
    if (tg_price_update(req->svc, &req->scope, tg_seg(req, 2), &u, &req->arena, &p, &req->err))
        return tg_reply_error(req);
    render_price(&req->jw, &p);
    return 200;
}

static int h_price_retrieve(tg_req *req)
{
    p_expand(req, "price");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_price p;
    if (tg_price_retrieve(req->svc, &req->scope, tg_seg(req, 2), &req->arena, &p, &req->err))
        return tg_reply_error(req);
    render_price(&req->jw, &p);
    return 200;
}

static int h_price_list(tg_req *req)
{
    tg_page page;
    tg_catalog_filter f;
    if (!p_page(req, &page, "price") || !catalog_filter(req, &f))
        return tg_reply_error(req);
    static const char *const types[] = {"one_time", "recurring", NULL};
    int type = -1;
    p_str(req, NULL, "product", NULL, 255, &f.product);
    p_str(req, NULL, "currency", NULL, 3, &f.currency);
    if (p_enum(req, NULL, "type", NULL, types, &type))
        f.recurring = type;
    tg_param *lk = tg_param_get(req->params, "lookup_keys");
    const char *keys[11];
    if (lk) {
        tg_param_use_all(lk);
        if (lk->kind == TG_PARAM_STRING && lk->value)
            keys[f.nlookup_keys++] = lk->value;
        else if (lk->kind == TG_PARAM_STRING)
            tg_err_set(&req->err, TG_EINVAL, "lookup_keys",
                       "Invalid lookup_keys: must be an array of strings.");
        else
            for (tg_param *c = lk->first; c && f.nlookup_keys < 11; c = c->next)
                if (c->kind == TG_PARAM_STRING && c->value)
                    keys[f.nlookup_keys++] = c->value;
        f.lookup_keys = keys;
    }
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_price *items;
    size_t n;
    bool more;
    if (tg_price_list(req->svc, &req->scope, &f, &page, &req->arena, &items, &n, &more,
                      &req->err))
        return tg_reply_error(req);
    tg_list_begin(req, "/v1/prices");
    for (size_t i = 0; i < n; i++)
        render_price(&req->jw, &items[i]);
    tg_list_end(req, more);
    return 200;
}

/* ================================================================ test clocks */

static int clock_reply(tg_req *req, int rc, const tg_test_clock *k)
{
    if (rc)
        return tg_reply_error(req);
    render_clock(&req->jw, k);
    return 200;
}

static int h_clock_create(tg_req *req)
{
    int64_t frozen = 0;
    const char *name = NULL;
    if (!p_int(req, NULL, "frozen_time", NULL, 0, 253402300799LL, &frozen) &&
        !tg_req_failed(req))
        tg_err_set(&req->err, TG_EMISSING, "frozen_time", "Missing required param: frozen_time.");
    p_str(req, NULL, "name", NULL, 300, &name);
    p_expand(req, "test_helpers.test_clock");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_test_clock k;
    return clock_reply(req, tg_test_clock_create(req->svc, &req->scope, frozen, name,
                                                 &req->arena, &k, &req->err), &k);
}

static int h_clock_retrieve(tg_req *req)
{
    p_expand(req, "test_helpers.test_clock");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_test_clock k;
    return clock_reply(req, tg_test_clock_retrieve(req->svc, &req->scope, tg_seg(req, 3),
                                                   &req->arena, &k, &req->err), &k);
}

static int h_clock_advance(tg_req *req)
{
    int64_t frozen = 0;
    if (!p_int(req, NULL, "frozen_time", NULL, 0, 253402300799LL, &frozen) &&
        !tg_req_failed(req))
        tg_err_set(&req->err, TG_EMISSING, "frozen_time", "Missing required param: frozen_time.");
    p_expand(req, "test_helpers.test_clock");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_test_clock k;
    return clock_reply(req, tg_test_clock_advance(req->svc, &req->scope, tg_seg(req, 3), frozen,
                                                  &req->arena, &k, &req->err), &k);
}

static int h_clock_delete(tg_req *req)
{
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    if (tg_test_clock_delete(req->svc, &req->scope, tg_seg(req, 3), &req->err))
        return tg_reply_error(req);
    return tg_reply_deleted(req, tg_seg(req, 3), "test_helpers.test_clock");
}

static int h_clock_list(tg_req *req)
{
    tg_page page;
    if (!p_page(req, &page, "test_helpers.test_clock") || !tg_req_params_done(req))
        return tg_reply_error(req);
    tg_test_clock *items;
    size_t n;
    bool more;
    if (tg_test_clock_list(req->svc, &req->scope, &page, &req->arena, &items, &n, &more,
                           &req->err))
        return tg_reply_error(req);
    tg_list_begin(req, "/v1/test_helpers/test_clocks");
    for (size_t i = 0; i < n; i++)
        render_clock(&req->jw, &items[i]);
    tg_list_end(req, more);
    return 200;
}

/* ================================================================ subscriptions */

static bool read_items(tg_req *req, bool update, tg_sub_params *p)
{
    tg_param *items = tg_param_get(req->params, "items");
    if (!items)
        return true;
    if (items->kind == TG_PARAM_STRING || items->count > TG_SUB_ITEMS_MAX) {
        tg_err_set(&req->err, TG_EINVAL, "items", "Invalid items: 1 to %d items.",
                   TG_SUB_ITEMS_MAX);
        return false;
    }
    p->has_items = true;
    for (tg_param *e = items->first; e; e = e->next) {
        e->used = true;
        size_t i = p->nitems++;
        tg_sub_item_spec *it = &p->items[i];
        char path[64];
        if (e->kind != TG_PARAM_HASH) {
            tg_err_set(&req->err, TG_EINVAL, "items", "Invalid items: each item is a hash.");
            return false;
        }
        if (update) {
            snprintf(path, sizeof path, "items[%zu][id]", i);
            p_str(req, e, "id", path, 255, &it->id);
            snprintf(path, sizeof path, "items[%zu][deleted]", i);
            p_bool(req, e, "deleted", path, &it->deleted);
        }
        snprintf(path, sizeof path, "items[%zu][price]", i);
        p_str(req, e, "price", path, 255, &it->price);
        snprintf(path, sizeof path, "items[%zu][quantity]", i);
        it->has_quantity = p_int(req, e, "quantity", path, 0, 1000000000000LL, &it->quantity);
        p_string_map(req, e, "metadata", true, &it->metadata, &it->metadata_clear);
        if (tg_req_failed(req))
            return false;
    }
    return true;
}

/* Parameters that change nothing: every field at its "leave" or "default" value. */
static void sub_params_init(tg_sub_params *p)
{
    memset(p, 0, sizeof *p);
    p->anchor_day = p->anchor_month = p->anchor_hour = p->anchor_minute = p->anchor_second = -1;
    p->trial_end_behavior = -1;
    p->cancel_at_period_end = -1;
    p->proration = -1;
    p->send_invoice = -1;
    p->days_until_due = -1;
}

static const char *const proration_words[] = {"create_prorations", "none", "always_invoice",
                                              NULL};

static bool read_sub_params(tg_req *req, bool update, tg_sub_params *p)
{
    sub_params_init(p);
    if (!update)
        p_str_required(req, NULL, "customer", NULL, 255, &p->customer);
    read_items(req, update, p);
    if (!update) {
        p_int(req, NULL, "billing_cycle_anchor", NULL, 1, 253402300799LL,
              &p->billing_cycle_anchor);
        tg_param *cfg = tg_param_get(req->params, "billing_cycle_anchor_config");
        if (cfg && !tg_req_failed(req)) {
            int64_t v;
            if (!p_int(req, cfg, "day_of_month", "billing_cycle_anchor_config[day_of_month]", 1,
                       31, &v) && !tg_req_failed(req))
                tg_err_set(&req->err, TG_EMISSING, "billing_cycle_anchor_config[day_of_month]",
                           "Missing required param: billing_cycle_anchor_config[day_of_month].");
            else
                p->anchor_day = (int)v;
            if (p_int(req, cfg, "month", "billing_cycle_anchor_config[month]", 1, 12, &v))
                p->anchor_month = (int)v;
            if (p_int(req, cfg, "hour", "billing_cycle_anchor_config[hour]", 0, 23, &v))
                p->anchor_hour = (int)v;
            if (p_int(req, cfg, "minute", "billing_cycle_anchor_config[minute]", 0, 59, &v))
                p->anchor_minute = (int)v;
            if (p_int(req, cfg, "second", "billing_cycle_anchor_config[second]", 0, 59, &v))
                p->anchor_second = (int)v;
        }
        if (p->billing_cycle_anchor && p->anchor_day > 0)
            tg_err_set(&req->err, TG_EEXCLUSIVE, "billing_cycle_anchor",
                       "Only one of billing_cycle_anchor and billing_cycle_anchor_config.");
        p_int(req, NULL, "trial_period_days", NULL, 1, 730, &p->trial_period_days);
        p_bool(req, NULL, "trial_from_plan", NULL, &p->trial_from_plan);
    }
    const char *trial_end;
    if (p_str(req, NULL, "trial_end", NULL, 20, &trial_end)) {
        if (strcmp(trial_end, "now") == 0)
            p->trial_end_now = true;
        else
            p_int(req, NULL, "trial_end", NULL, 1, 253402300799LL, &p->trial_end);
    }
    if (p->trial_end_now + !!p->trial_end + !!p->trial_period_days > 1)
        tg_err_set(&req->err, TG_EEXCLUSIVE, "trial_end",
                   "Only one of trial_end and trial_period_days.");
    tg_param *ts = tg_param_get(req->params, "trial_settings");
    if (ts && !tg_req_failed(req)) {
        static const char *const words[] = {"create_invoice", "cancel", "pause", NULL};
        tg_param *eb = tg_param_get(ts, "end_behavior");
        int v;
        if (eb && p_enum(req, eb, "missing_payment_method",
                         "trial_settings[end_behavior][missing_payment_method]", words, &v))
            p->trial_end_behavior = v;
        if (ts->kind != TG_PARAM_HASH || !eb || eb->kind != TG_PARAM_HASH)
            tg_err_set(&req->err, TG_EINVAL, "trial_settings",
                       "Invalid trial_settings: give trial_settings[end_behavior]"
                       "[missing_payment_method].");
    }
    bool b;
    if (p_bool(req, NULL, "cancel_at_period_end", NULL, &b))
        p->cancel_at_period_end = b;
    tg_param *ca = tg_param_get(req->params, "cancel_at");
    if (ca) {
        p->cancel_at_set = true;
        if (ca->kind == TG_PARAM_STRING && ca->value && *ca->value)
            p_int(req, NULL, "cancel_at", NULL, 1, 253402300799LL, &p->cancel_at);
    }
    p_enum(req, NULL, "proration_behavior", NULL, proration_words, &p->proration);
    static const char *const collection_words[] = {"charge_automatically", "send_invoice", NULL};
    p_enum(req, NULL, "collection_method", NULL, collection_words, &p->send_invoice);
    p_int(req, NULL, "days_until_due", NULL, 0, 3650, &p->days_until_due);
    p_opt_str(req, NULL, "default_payment_method", 255, &p->default_payment_method);
    p_opt_str(req, NULL, "description", 500, &p->description);
    p_string_map(req, NULL, "metadata", update, &p->metadata, &p->metadata_clear);
    /* How a failed first payment is handled: payments are collected outside Tollgate, so an
     * invoice never fails and these all mean what Tollgate does. default_incomplete (the
     * subscription waits, incomplete, for its first payment) is not supported. */
    static const char *const payment_behaviors[] = {"allow_incomplete", "error_if_incomplete",
                                                    "pending_if_incomplete",
                                                    "default_incomplete", NULL};
    int behavior;
    if (p_enum(req, NULL, "payment_behavior", NULL, payment_behaviors, &behavior) &&
        behavior == 3)
        tg_err_set(&req->err, TG_EINVAL, "payment_behavior",
                   "payment_behavior=default_incomplete is not supported: payments are "
                   "collected outside Tollgate, so a subscription is active from its start "
                   "(pay its invoices with paid_out_of_band=true).");
    p_expand(req, "subscription");
    return tg_req_params_done(req);
}

static int sub_reply(tg_req *req, int rc, const tg_subscription *s)
{
    if (rc)
        return tg_reply_error(req);
    render_subscription(&req->jw, s);
    return 200;
}

static int h_sub_create(tg_req *req)
{
    tg_sub_params *p = tg_arena_alloc(&req->arena, sizeof *p);
    tg_subscription s;
    if (!p)
        return tg_err_set(&req->err, TG_ENOMEM, NULL, NULL), tg_reply_error(req);
    if (!read_sub_params(req, false, p))
        return tg_reply_error(req);
    return sub_reply(req, tg_subscription_create(req->svc, &req->scope, p, &req->arena, &s,
                                                 &req->err), &s);
}

static int h_sub_update(tg_req *req)
{
    tg_sub_params *p = tg_arena_alloc(&req->arena, sizeof *p);
    tg_subscription s;
    if (!p)
        return tg_err_set(&req->err, TG_ENOMEM, NULL, NULL), tg_reply_error(req);
    if (!read_sub_params(req, true, p))
        return tg_reply_error(req);
    return sub_reply(req, tg_subscription_update(req->svc, &req->scope, tg_seg(req, 2), p,
                                                 &req->arena, &s, &req->err), &s);
}

static int h_sub_retrieve(tg_req *req)
{
    p_expand(req, "subscription");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_subscription s;
    return sub_reply(req, tg_subscription_retrieve(req->svc, &req->scope, tg_seg(req, 2),
                                                   &req->arena, &s, &req->err), &s);
}

static int h_sub_cancel(tg_req *req)
{
    bool invoice_now = false;
    tg_cancel_details details = {0};
    p_bool(req, NULL, "invoice_now", NULL, &invoice_now);
    tg_param *cd = tg_param_get(req->params, "cancellation_details");
    if (cd) {
        static const char *const feedbacks[] = {
            "customer_service", "low_quality", "missing_features", "other", "switched_service",
            "too_complex", "too_expensive", "unused", NULL};
        int fb;
        p_str(req, cd, "comment", "cancellation_details[comment]", 5000, &details.comment);
        tg_param *f = tg_param_get(cd, "feedback");
        if (f && f->kind == TG_PARAM_STRING && f->value && *f->value &&
            p_enum(req, cd, "feedback", "cancellation_details[feedback]", feedbacks, &fb))
            details.feedback = feedbacks[fb];
        else if (f)
            f->used = true; /* "" clears: no feedback */
        if (details.comment && !*details.comment)
            details.comment = NULL;
        details.reason = "cancellation_requested";
    }
    p_expand(req, "subscription");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_subscription s;
    return sub_reply(req, tg_subscription_cancel(req->svc, &req->scope, tg_seg(req, 2),
                                                 invoice_now, &details, &req->arena, &s,
                                                 &req->err), &s);
}

static int h_sub_resume(tg_req *req)
{
    static const char *const anchors[] = {"now", NULL};
    int anchor;
    p_enum(req, NULL, "billing_cycle_anchor", NULL, anchors, &anchor);
    p_expand(req, "subscription");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_subscription s;
    return sub_reply(req, tg_subscription_resume(req->svc, &req->scope, tg_seg(req, 2),
                                                 &req->arena, &s, &req->err), &s);
}

static int h_sub_list(tg_req *req)
{
    tg_page page;
    if (!p_page(req, &page, "subscription"))
        return tg_reply_error(req);
    tg_sub_filter f = {.status = -1};
    p_created(req, &f.created);
    p_str(req, NULL, "customer", NULL, 255, &f.customer);
    p_str(req, NULL, "price", NULL, 255, &f.price);
    p_str(req, NULL, "test_clock", NULL, 255, &f.test_clock);
    const char *status;
    if (p_str(req, NULL, "status", NULL, 32, &status)) {
        if (strcmp(status, "all") == 0)
            f.status = -2;
        else if (strcmp(status, "ended") == 0) /* canceled or incomplete_expired: canceled */
            f.status = TG_SUB_CANCELED;
        else
            p_enum(req, NULL, "status", NULL, tg_sub_status_words, &f.status);
    }
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_subscription *items;
    size_t n;
    bool more;
    if (tg_subscription_list(req->svc, &req->scope, &f, &page, &req->arena, &items, &n, &more,
                             &req->err))
        return tg_reply_error(req);
    tg_list_begin(req, "/v1/subscriptions");
    for (size_t i = 0; i < n; i++)
        render_subscription(&req->jw, &items[i]);
    tg_list_end(req, more);
    return 200;
}

/* ---- subscription items: each request is a change of the item's subscription */

/* An error about items[0][X] of the change made for an item request names X, the request's
 * own parameter. */
static int item_error(tg_req *req)
{
    static const char prefix[] = "items[0][";
    char *param = req->err.param;
    if (strncmp(param, prefix, sizeof prefix - 1) == 0) {
        char *name = param + sizeof prefix - 1, *close = strchr(name, ']');
        if (close) {
            memmove(close, close + 1, strlen(close + 1) + 1);
            memmove(param, name, strlen(name) + 1);
        }
    }
    return tg_reply_error(req);
}

static const tg_sub_item *item_of(const tg_subscription *s, const char *id)
{
    for (size_t i = 0; i < s->nitems; i++)
        if (strcmp(s->items[i].id, id) == 0)
            return &s->items[i];
    return NULL;
}

/* price, quantity, metadata and proration_behavior of an item create or update, as the one
 * item of a subscription change. */
static bool read_item_change(tg_req *req, bool create, tg_sub_params *p)
{
    sub_params_init(p);
    p->has_items = true;
    p->nitems = 1;
    tg_sub_item_spec *it = &p->items[0];
    if (create)
        p_str_required(req, NULL, "price", NULL, 255, &it->price);
    else
        p_str(req, NULL, "price", NULL, 255, &it->price);
    it->has_quantity = p_int(req, NULL, "quantity", NULL, 0, 1000000000000LL, &it->quantity);
    p_string_map(req, NULL, "metadata", !create, &it->metadata, &it->metadata_clear);
    p_enum(req, NULL, "proration_behavior", NULL, proration_words, &p->proration);
    p_expand(req, "subscription_item");
    if (!tg_req_failed(req)) /* here, so that its errors name metadata, not items[0][metadata] */
        tg_metadata_validate(&it->metadata, "metadata", &req->err);
    return tg_req_params_done(req);
}

/* Runs p on the subscription of item `id` (NULL: sub_id's) and answers with the item. */
static int item_change(tg_req *req, const char *sub_id, const char *id, tg_sub_params *p)
{
    char owner[TG_ID_MAX];
    if (!sub_id) {
        if (tg_subscription_item_owner(req->svc, &req->scope, id, &req->arena, owner, &req->err))
            return tg_reply_error(req);
        sub_id = owner;
    }
    tg_subscription s;
    if (tg_subscription_update(req->svc, &req->scope, sub_id, p, &req->arena, &s, &req->err)) {
        if (!id && req->err.code == TG_ENOTFOUND && strcmp(req->err.param, "id") == 0)
            tg_strlcpy(req->err.param, "subscription", sizeof req->err.param);
        return item_error(req);
    }
    /* A new item is the one with its price: a price is on a subscription at most once. */
    const tg_sub_item *it = NULL;
    for (size_t i = 0; !id && i < s.nitems; i++)
        if (strcmp(s.items[i].price.id, p->items[0].price) == 0)
            it = &s.items[i];
    if (id)
        it = item_of(&s, id);
    if (!it)
        return tg_err_set(&req->err, TG_ESTORE, NULL, "The item is missing after its change."),
               tg_reply_error(req);
    render_item(&req->jw, &s, it);
    return 200;
}

static int h_item_create(tg_req *req)
{
    const char *sub_id;
    tg_sub_params *p = tg_arena_alloc(&req->arena, sizeof *p);
    if (!p)
        return tg_err_set(&req->err, TG_ENOMEM, NULL, NULL), tg_reply_error(req);
    p_str_required(req, NULL, "subscription", NULL, 255, &sub_id);
    if (!read_item_change(req, true, p))
        return tg_reply_error(req);
    return item_change(req, sub_id, NULL, p);
}

static int h_item_update(tg_req *req)
{
    tg_sub_params *p = tg_arena_alloc(&req->arena, sizeof *p);
    if (!p)
        return tg_err_set(&req->err, TG_ENOMEM, NULL, NULL), tg_reply_error(req);
    if (!read_item_change(req, false, p))
        return tg_reply_error(req);
    p->items[0].id = tg_seg(req, 2);
    return item_change(req, NULL, tg_seg(req, 2), p);
}

static int h_item_delete(tg_req *req)
{
    tg_sub_params *p = tg_arena_alloc(&req->arena, sizeof *p);
    if (!p)
        return tg_err_set(&req->err, TG_ENOMEM, NULL, NULL), tg_reply_error(req);
    sub_params_init(p);
    p_enum(req, NULL, "proration_behavior", NULL, proration_words, &p->proration);
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    const char *id = tg_seg(req, 2);
    char owner[TG_ID_MAX];
    tg_subscription s;
    p->has_items = true;
    p->nitems = 1;
    p->items[0].id = id;
    p->items[0].deleted = true;
    if (tg_subscription_item_owner(req->svc, &req->scope, id, &req->arena, owner, &req->err) ||
        tg_subscription_update(req->svc, &req->scope, owner, p, &req->arena, &s, &req->err))
        return item_error(req);
    return tg_reply_deleted(req, id, "subscription_item");
}

static int h_item_retrieve(tg_req *req)
{
    p_expand(req, "subscription_item");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    const char *id = tg_seg(req, 2);
    char owner[TG_ID_MAX];
    tg_subscription s;
    if (tg_subscription_item_owner(req->svc, &req->scope, id, &req->arena, owner, &req->err) ||
        tg_subscription_retrieve(req->svc, &req->scope, owner, &req->arena, &s, &req->err))
        return tg_reply_error(req);
    const tg_sub_item *it = item_of(&s, id);
    if (!it)
        return tg_err_set(&req->err, TG_ENOTFOUND, "id", "No such subscription item: '%s'", id),
               tg_reply_error(req);
    render_item(&req->jw, &s, it);
    return 200;
}

/* GET /v1/subscription_items?subscription=: the items in the subscription's order. */
static int h_item_list(tg_req *req)
{
    tg_page page;
    const char *sub_id;
    p_str_required(req, NULL, "subscription", NULL, 255, &sub_id);
    if (!p_page(req, &page, "subscription_item") || !tg_req_params_done(req))
        return tg_reply_error(req);
    tg_subscription s;
    if (tg_subscription_retrieve(req->svc, &req->scope, sub_id, &req->arena, &s, &req->err)) {
        if (req->err.code == TG_ENOTFOUND)
            tg_strlcpy(req->err.param, "subscription", sizeof req->err.param);
        return tg_reply_error(req);
    }
    size_t from, to;
    bool more;
    if (!page_window(req, &page, "subscription item", s.items ? s.items[0].id : NULL,
                     sizeof *s.items, s.nitems, &from, &to, &more))
        return tg_reply_error(req);
    tg_list_begin(req, "/v1/subscription_items");
    for (size_t i = from; i < to; i++)
        render_item(&req->jw, &s, &s.items[i]);
    tg_list_end(req, more);
    return 200;
}

/* ---- schedules */

/* phases[1][items] (the phase after the current one) into sp->phase. phases[0] describes the
 * current phase and must end at the current period's end. No phases: phases_set stays false. */
static bool read_phases(tg_req *req, tg_schedule_params *sp)
{
    tg_sub_next_phase *ph = &sp->phase;
    tg_phase_checks *checks = &sp->checks;
    tg_param *phases = tg_param_get(req->params, "phases");
    if (!phases)
        return true; /* left as they are */
    sp->phases_set = true;
    if (phases->kind == TG_PARAM_STRING || phases->count < 1 || phases->count > 2) {
        tg_err_set(&req->err, TG_EINVAL, "phases",
                   "Tollgate schedules have the current phase and at most one next phase, "
                   "starting at the next renewal.");
        return false;
    }
    size_t k = 0;
    for (tg_param *e = phases->first; e; e = e->next, k++) {
        e->used = true;
        if (e->kind != TG_PARAM_HASH) {
            tg_err_set(&req->err, TG_EINVAL, "phases", "Invalid phases: each phase is a hash.");
            return false;
        }
        char path[80];
        int64_t v;
        /* iterations=1 and either proration_behavior describe the one shape as it is (the
         * change happens at a renewal, where nothing is prorated); dates are checked. */
        snprintf(path, sizeof path, "phases[%zu][start_date]", k);
        p_int(req, e, "start_date", path, 1, 253402300799LL, &checks->start_date[k]);
        snprintf(path, sizeof path, "phases[%zu][end_date]", k);
        p_int(req, e, "end_date", path, 1, 253402300799LL, &checks->end_date[k]);
        snprintf(path, sizeof path, "phases[%zu][iterations]", k);
        p_int(req, e, "iterations", path, 1, 1, &v);
        snprintf(path, sizeof path, "phases[%zu][proration_behavior]", k);
        static const char *const pw[] = {"none", "create_prorations", NULL};
        int pb;
        p_enum(req, e, "proration_behavior", path, pw, &pb);
        tg_param *items = tg_param_get(e, "items");
        if (!items || items->kind != TG_PARAM_ARRAY || items->count < 1 ||
            items->count > TG_SUB_ITEMS_MAX) {
            snprintf(path, sizeof path, "phases[%zu][items]", k);
            tg_err_set(&req->err, items ? TG_EINVAL : TG_EMISSING, path,
                       "Each phase needs 1 to %d items.", TG_SUB_ITEMS_MAX);
            return false;
        }
        size_t i = 0;
        for (tg_param *it = items->first; it; it = it->next, i++) {
            it->used = true;
            const char *price = NULL;
            int64_t qty = 1;
            snprintf(path, sizeof path, "phases[%zu][items][%zu][price]", k, i);
            p_str_required(req, it, "price", path, 255, &price);
            snprintf(path, sizeof path, "phases[%zu][items][%zu][quantity]", k, i);
            p_int(req, it, "quantity", path, 0, 1000000000000LL, &qty);
            if (tg_req_failed(req))
                return false;
            tg_phase_item *dst = k == 1 ? &ph->items[i] : &checks->current[i];
            tg_strlcpy(dst->price, price, sizeof dst->price);
            dst->quantity = qty;
            *(k == 1 ? &ph->nitems : &checks->ncurrent) = i + 1;
        }
        if (k == 1)
            ph->set = true;
    }
    return true;
}

/* An update's parameters: phases (optional), metadata, and the one end_behavior and
 * proration_behavior Tollgate's schedules have. */
static bool read_schedule_update(tg_req *req, tg_schedule_params *sp)
{
    memset(sp, 0, sizeof *sp);
    sp->op = TG_SCHEDULE_UPDATE;
    static const char *const eb[] = {"release", NULL};
    static const char *const pw[] = {"none", "create_prorations", NULL};
    int v;
    read_phases(req, sp);
    p_enum(req, NULL, "end_behavior", NULL, eb, &v);
    p_enum(req, NULL, "proration_behavior", NULL, pw, &v);
    p_string_map(req, NULL, "metadata", true, &sp->metadata, &sp->metadata_clear);
    p_expand(req, "subscription_schedule");
    return tg_req_params_done(req);
}

static int h_schedule_create(tg_req *req)
{
    const char *from;
    tg_schedule_params sp = {.op = TG_SCHEDULE_CREATE}; /* no change planned yet */
    p_str_required(req, NULL, "from_subscription", NULL, 255, &from);
    p_string_map(req, NULL, "metadata", false, &sp.metadata, NULL);
    p_expand(req, "subscription_schedule");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_sub_schedule k;
    if (tg_subscription_schedule(req->svc, &req->scope, from, &sp, &req->arena, &k, &req->err))
        return tg_reply_error(req);
    render_schedule(&req->jw, &k);
    return 200;
}

/* A missing schedule is named as Stripe names it. */
static int schedule_error(tg_req *req)
{
    if (req->err.code == TG_ENOTFOUND && strcmp(req->err.param, "id") == 0) {
        tg_err_clear(&req->err);
        tg_err_set(&req->err, TG_ENOTFOUND, "schedule", "No such subscription schedule: '%s'",
                   tg_seg(req, 2));
    }
    return tg_reply_error(req);
}

/* Runs sp on the schedule of the path and answers with it (as it is after: released or
 * canceled by release and cancel). An ended schedule is refused (400) and left as it is. */
static int schedule_change(tg_req *req, const tg_schedule_params *sp)
{
    tg_sub_schedule k;
    if (tg_subscription_schedule(req->svc, &req->scope, tg_seg(req, 2), sp, &req->arena, &k,
                                 &req->err))
        return schedule_error(req);
    render_schedule(&req->jw, &k);
    return 200;
}

static int h_schedule_update(tg_req *req)
{
    tg_schedule_params sp;
    if (!read_schedule_update(req, &sp))
        return tg_reply_error(req);
    return schedule_change(req, &sp);
}

/* POST /v1/subscription_schedules/:id/release: the plan is dropped, the subscription goes on
 * as it is (preserve_cancel_date: a schedule here never sets one). */
static int h_schedule_release(tg_req *req)
{
    bool preserve;
    p_bool(req, NULL, "preserve_cancel_date", NULL, &preserve);
    p_expand(req, "subscription_schedule");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_schedule_params sp = {.op = TG_SCHEDULE_RELEASE};
    return schedule_change(req, &sp);
}

/* POST /v1/subscription_schedules/:id/cancel: cancels its subscription at once, with a final
 * invoice of its usage and pending lines unless invoice_now=false (Stripe's default is true
 * here). prorate is refused, as on a subscription cancel: no credit is made for the unused
 * licensed time. */
static int h_schedule_cancel(tg_req *req)
{
    tg_schedule_params sp = {.op = TG_SCHEDULE_CANCEL, .invoice_now = true};
    p_bool(req, NULL, "invoice_now", NULL, &sp.invoice_now);
    p_expand(req, "subscription_schedule");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    return schedule_change(req, &sp);
}

static int h_schedule_retrieve(tg_req *req)
{
    p_expand(req, "subscription_schedule");
    tg_sub_schedule k;
    if (!tg_req_params_done(req) ||
        tg_schedule_retrieve(req->svc, &req->scope, tg_seg(req, 2), &req->arena, &k, &req->err))
        return schedule_error(req);
    render_schedule(&req->jw, &k);
    return 200;
}

/* GET /v1/subscription_schedules: every schedule, released and canceled ones too, newest
 * first. */
static int h_schedule_list(tg_req *req)
{
    tg_page page;
    tg_schedule_filter f = {0};
    if (!p_page(req, &page, "subscription_schedule"))
        return tg_reply_error(req);
    p_str(req, NULL, "customer", NULL, 255, &f.customer);
    p_created(req, &f.created);
    p_time_range(req, "released_at", &f.released_at);
    p_time_range(req, "canceled_at", &f.canceled_at);
    p_time_range(req, "completed_at", &f.completed_at);
    p_bool(req, NULL, "scheduled", NULL, &f.scheduled);
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_sub_schedule *items;
    size_t n;
    bool more;
    if (tg_schedule_list(req->svc, &req->scope, &f, &page, &req->arena, &items, &n, &more,
                         &req->err))
        return tg_reply_error(req);
    tg_list_begin(req, "/v1/subscription_schedules");
    for (size_t i = 0; i < n; i++)
        render_schedule(&req->jw, &items[i]);
    tg_list_end(req, more);
    return 200;
}

/* ================================================================ invoices */

static int invoice_reply(tg_req *req, int rc, const tg_invoice *v)
{
    if (rc)
        return tg_reply_error(req);
    render_invoice(&req->jw, v);
    return 200;
}

static int h_invoice_retrieve(tg_req *req)
{
    p_expand(req, "invoice");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_invoice v;
    return invoice_reply(req, tg_invoice_retrieve(req->svc, &req->scope, tg_seg(req, 2),
                                                  &req->arena, &v, &req->err), &v);
}

static int h_invoice_lines(tg_req *req)
{
    tg_page page;
    if (!p_page(req, &page, "line_item") || !tg_req_params_done(req))
        return tg_reply_error(req);
    tg_invoice v;
    if (tg_invoice_retrieve(req->svc, &req->scope, tg_seg(req, 2), &req->arena, &v, &req->err))
        return tg_reply_error(req);
    /* Lines are in invoice order; cursors are line ids. */
    size_t from, to;
    bool more;
    if (!page_window(req, &page, "line item", v.lines ? v.lines[0].id : NULL,
                     sizeof *v.lines, v.nlines, &from, &to, &more))
        return tg_reply_error(req);
    char url[160];
    snprintf(url, sizeof url, "/v1/invoices/%s/lines", v.id);
    tg_list_begin(req, url);
    for (size_t i = from; i < to; i++)
        render_line(&req->jw, &v, &v.lines[i]);
    tg_list_end(req, more);
    return 200;
}

static int h_invoice_list(tg_req *req)
{
    tg_page page;
    if (!p_page(req, &page, "invoice"))
        return tg_reply_error(req);
    tg_invoice_filter f = {.status = -1};
    p_created(req, &f.created);
    p_str(req, NULL, "customer", NULL, 255, &f.customer);
    p_str(req, NULL, "subscription", NULL, 255, &f.subscription);
    p_enum(req, NULL, "status", NULL, tg_inv_status_words, &f.status);
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_invoice *items;
    size_t n;
    bool more;
    if (tg_invoice_list(req->svc, &req->scope, &f, &page, &req->arena, &items, &n, &more,
                        &req->err))
        return tg_reply_error(req);
    tg_list_begin(req, "/v1/invoices");
    for (size_t i = 0; i < n; i++)
        render_invoice(&req->jw, &items[i]);
    tg_list_end(req, more);
    return 200;
}

static int invoice_action(tg_req *req, tg_inv_action act)
{
    bool oob = false, advance;
    int auto_advance = -1;
    if (act == TG_INV_PAY)
        p_bool(req, NULL, "paid_out_of_band", NULL, &oob);
    if (act == TG_INV_FINALIZE && p_bool(req, NULL, "auto_advance", NULL, &advance))
        auto_advance = advance;
    p_expand(req, "invoice");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_invoice v;
    return invoice_reply(req, tg_invoice_act(req->svc, &req->scope, tg_seg(req, 2), act, oob,
                                             auto_advance, &req->arena, &v, &req->err), &v);
}

static int h_invoice_finalize(tg_req *req) { return invoice_action(req, TG_INV_FINALIZE); }
static int h_invoice_pay(tg_req *req) { return invoice_action(req, TG_INV_PAY); }
static int h_invoice_void(tg_req *req) { return invoice_action(req, TG_INV_VOID_IT); }
static int h_invoice_uncollectible(tg_req *req) { return invoice_action(req, TG_INV_UNCOLLECT); }

static int h_invoice_preview(tg_req *req)
{
    const char *sub = NULL, *customer = NULL;
    p_str(req, NULL, "subscription", NULL, 255, &sub);
    p_str(req, NULL, "customer", NULL, 255, &customer);
    p_expand(req, "invoice");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_invoice v;
    int rc = tg_invoice_preview(req->svc, &req->scope, sub, &req->arena, &v, &req->err);
    if (!rc && customer && strcmp(customer, v.customer) != 0)
        rc = tg_err_set(&req->err, TG_EINVAL, "customer",
                        "The subscription %s belongs to another customer.", sub);
    return invoice_reply(req, rc, &v);
}

/* ================================================================ events */

static int h_event_retrieve(tg_req *req)
{
    p_expand(req, "event");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_billing_event e;
    if (tg_billing_event_retrieve(req->svc, &req->scope, tg_seg(req, 2), &req->arena, &e,
                                  &req->err))
        return tg_reply_error(req);
    tg_render_event(&req->jw, &e);
    return 200;
}

static int h_event_list(tg_req *req)
{
    tg_page page;
    tg_event_filter f = {0};
    const char *types[TG_EVENT_TYPES_MAX];
    if (!p_page(req, &page, "event"))
        return tg_reply_error(req);
    p_str(req, NULL, "type", NULL, 128, &f.type);
    tg_param *tp = tg_param_get(req->params, "types");
    if (tp) {
        tg_param_use_all(tp);
        for (tg_param *e = tp->kind == TG_PARAM_ARRAY ? tp->first : NULL; e; e = e->next) {
            if (e->kind != TG_PARAM_STRING || !e->value || !*e->value ||
                f.ntypes >= TG_EVENT_TYPES_MAX) {
                f.ntypes = TG_EVENT_TYPES_MAX + 1; /* refused below */
                break;
            }
            types[f.ntypes++] = e->value;
        }
        if (tp->kind != TG_PARAM_ARRAY || !f.ntypes || f.ntypes > TG_EVENT_TYPES_MAX)
            tg_err_set(&req->err, TG_EINVAL, "types",
                       "Invalid types: an array of 1 to %d event types.", TG_EVENT_TYPES_MAX);
        else if (f.type)
            tg_err_set(&req->err, TG_EEXCLUSIVE, "types",
                       "You may only specify one of these parameters: type, types.");
        f.types = types;
    }
    p_created(req, &f.created);
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_billing_event *items;
    size_t n;
    bool more;
    if (tg_billing_event_list(req->svc, &req->scope, &f, &page, &req->arena, &items, &n, &more,
                              &req->err))
        return tg_reply_error(req);
    tg_list_begin(req, "/v1/events");
    for (size_t i = 0; i < n; i++)
        tg_render_event(&req->jw, &items[i]);
    tg_list_end(req, more);
    return 200;
}

/* ================================================================ search */

int tg_handle_search(tg_req *req)
{
    static const struct {
        const char *segment, *type;
        tg_search_resource r;
    } resources[] = {
        {"customers", "customer", TG_SEARCH_CUSTOMERS},
        {"products", "product", TG_SEARCH_PRODUCTS},
        {"prices", "price", TG_SEARCH_PRICES},
        {"subscriptions", "subscription", TG_SEARCH_SUBSCRIPTIONS},
        {"invoices", "invoice", TG_SEARCH_INVOICES},
    };
    const char *segment = tg_seg(req, 1);
    size_t k = 0;
    while (k < sizeof resources / sizeof *resources && strcmp(resources[k].segment, segment))
        k++;
    if (k == sizeof resources / sizeof *resources) {
        tg_err_set(&req->err, TG_EROUTE, NULL, "Unrecognized request URL (%s: %s).", req->method,
                   req->path);
        return tg_reply_error(req);
    }
    tg_search_request q = {.limit = 10};
    int64_t limit = 10;
    p_str_required(req, NULL, "query", NULL, 10000, &q.query);
    if (p_int(req, NULL, "limit", NULL, 1, TG_LIST_MAX, &limit))
        q.limit = (int)limit;
    p_str(req, NULL, "page", NULL, 255, &q.page);
    if (!tg_req_failed(req)) {
        req->expand.search = true;
        tg_expand_read(req, resources[k].type, true);
        q.total_count = req->expand.total_count;
    }
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_search_result res;
    if (tg_search(req->svc, &req->scope, resources[k].r, &q, &req->arena, &res, &req->err))
        return tg_reply_error(req);
    tg_jw *w = &req->jw;
    char url[48];
    snprintf(url, sizeof url, "/v1/%s/search", segment);
    jw_obj(w);
    jw_kstr(w, "object", "search_result");
    jw_kstr(w, "url", url);
    jw_kbool(w, "has_more", res.has_more);
    jw_key(w, "data");
    jw_arr(w);
    tg_expand_enter(w, "data");
    for (size_t i = 0; i < res.n; i++) {
        switch (resources[k].r) {
        case TG_SEARCH_CUSTOMERS: tg_render_customer(w, (tg_customer *)res.items + i); break;
        case TG_SEARCH_PRODUCTS: render_product(w, (tg_product *)res.items + i); break;
        case TG_SEARCH_PRICES: render_price(w, (tg_price *)res.items + i); break;
        case TG_SEARCH_SUBSCRIPTIONS:
            render_subscription(w, (tg_subscription *)res.items + i);
            break;
        case TG_SEARCH_INVOICES: render_invoice(w, (tg_invoice *)res.items + i); break;
        }
    }
    tg_expand_leave(w);
    jw_aend(w);
    jw_kstr(w, "next_page", res.next_page);
    if (q.total_count)
        jw_kint(w, "total_count", res.total_count);
    jw_end(w);
    return 200;
}

/* ================================================================ the table */

/* Only the routes that make an object name `creates`; the others leave it NULL. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
const tg_route tg_billing_routes[] = {
    {"POST", "/v1/products", h_product_create, TG_ROUTE_SECRET, "prod_"},
    {"GET", "/v1/products", h_product_list, TG_ROUTE_SECRET},
    {"GET", "/v1/products/:id", h_product_retrieve, TG_ROUTE_SECRET},
    {"POST", "/v1/products/:id", h_product_update, TG_ROUTE_SECRET},
    {"DELETE", "/v1/products/:id", h_product_delete, TG_ROUTE_SECRET},
    {"POST", "/v1/prices", h_price_create, TG_ROUTE_SECRET, "price_"},
    {"GET", "/v1/prices", h_price_list, TG_ROUTE_SECRET},
    {"GET", "/v1/prices/:id", h_price_retrieve, TG_ROUTE_SECRET},
    {"POST", "/v1/prices/:id", h_price_update, TG_ROUTE_SECRET},
    {"POST", "/v1/test_helpers/test_clocks", h_clock_create, TG_ROUTE_SECRET, "clock_"},
    {"GET", "/v1/test_helpers/test_clocks", h_clock_list, TG_ROUTE_SECRET},
    {"GET", "/v1/test_helpers/test_clocks/:id", h_clock_retrieve, TG_ROUTE_SECRET},
    {"DELETE", "/v1/test_helpers/test_clocks/:id", h_clock_delete, TG_ROUTE_SECRET},
    {"POST", "/v1/test_helpers/test_clocks/:id/advance", h_clock_advance, TG_ROUTE_SECRET},
    {"POST", "/v1/subscriptions", h_sub_create, TG_ROUTE_SECRET, "sub_"},
    {"GET", "/v1/subscriptions", h_sub_list, TG_ROUTE_SECRET},
    {"POST", "/v1/subscription_items", h_item_create, TG_ROUTE_SECRET, "si_"},
    {"GET", "/v1/subscription_items", h_item_list, TG_ROUTE_SECRET},
    {"GET", "/v1/subscription_items/:id", h_item_retrieve, TG_ROUTE_SECRET},
    {"POST", "/v1/subscription_items/:id", h_item_update, TG_ROUTE_SECRET},
    {"DELETE", "/v1/subscription_items/:id", h_item_delete, TG_ROUTE_SECRET},
    {"GET", "/v1/subscriptions/:id", h_sub_retrieve, TG_ROUTE_SECRET},
    {"POST", "/v1/subscriptions/:id", h_sub_update, TG_ROUTE_SECRET},
    {"DELETE", "/v1/subscriptions/:id", h_sub_cancel, TG_ROUTE_SECRET},
    {"POST", "/v1/subscriptions/:id/resume", h_sub_resume, TG_ROUTE_SECRET},
    {"POST", "/v1/subscription_schedules", h_schedule_create, TG_ROUTE_SECRET, "sub_sched_"},
    {"GET", "/v1/subscription_schedules", h_schedule_list, TG_ROUTE_SECRET},
    {"GET", "/v1/subscription_schedules/:id", h_schedule_retrieve, TG_ROUTE_SECRET},
    {"POST", "/v1/subscription_schedules/:id", h_schedule_update, TG_ROUTE_SECRET},
    {"POST", "/v1/subscription_schedules/:id/release", h_schedule_release, TG_ROUTE_SECRET},
    {"POST", "/v1/subscription_schedules/:id/cancel", h_schedule_cancel, TG_ROUTE_SECRET},
    {"GET", "/v1/invoices", h_invoice_list, TG_ROUTE_SECRET},
    {"POST", "/v1/invoices/create_preview", h_invoice_preview, TG_ROUTE_SECRET},
    {"GET", "/v1/invoices/:id", h_invoice_retrieve, TG_ROUTE_SECRET},
    {"GET", "/v1/invoices/:id/lines", h_invoice_lines, TG_ROUTE_SECRET},
    {"POST", "/v1/invoices/:id/finalize", h_invoice_finalize, TG_ROUTE_SECRET},
    {"POST", "/v1/invoices/:id/pay", h_invoice_pay, TG_ROUTE_SECRET},
    {"POST", "/v1/invoices/:id/void", h_invoice_void, TG_ROUTE_SECRET},
    {"POST", "/v1/invoices/:id/mark_uncollectible", h_invoice_uncollectible, TG_ROUTE_SECRET},
    {"GET", "/v1/events", h_event_list, TG_ROUTE_SECRET},
    {"GET", "/v1/events/:id", h_event_retrieve, TG_ROUTE_SECRET},
};
#pragma GCC diagnostic pop
const size_t tg_nbilling_routes = sizeof tg_billing_routes / sizeof tg_billing_routes[0];
