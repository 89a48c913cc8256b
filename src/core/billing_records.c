/* billing_records.c -- billing objects to and from their stored records (core/record.h).
 *
 * One encoder and one decoder per object, each a flat list of fields with fixed tags. Nested
 * objects (tiers, subscription items with their price copy, pending lines, invoice lines) are
 * records inside a bytes field. Tags are part of the storage format: never renumber one, add
 * new ones. Decoders start from a zeroed object, so a field missing from an older row reads
 * as its zero value.
 */
#include "core/billing_records.h"

#include <string.h>

#include "core/metadata.h"
#include "core/record.h"

/* Encodes a nested record built by fn into field tag of b. */
static void put_nested(tg_buf *b, unsigned tag, void (*fn)(tg_buf *, const void *),
                       const void *obj)
{
    tg_buf inner;
    tg_buf_init(&inner, TG_RECORD_MAX);
    fn(&inner, obj);
    if (inner.failed)
        b->failed = true;
    tg_rec_bytes(b, tag, inner.data ? inner.data : "", inner.len);
    tg_buf_free(&inner);
}

static void put_metadata(tg_buf *b, unsigned tag, const tg_metadata *md)
{
    if (!md->n)
        return;
    tg_buf inner;
    tg_buf_init(&inner, TG_RECORD_MAX);
    if (tg_metadata_encode(md, &inner))
        b->failed = true;
    tg_rec_bytes(b, tag, inner.data ? inner.data : "", inner.len);
    tg_buf_free(&inner);
}

static int get_metadata(const tg_rec_field *f, tg_arena *a, tg_metadata *md)
{
    return tg_metadata_decode(f->data, f->len, a, md) ? -1 : 0;
}

/* Appends one element to an arena array that grows by doubling. */
static void *grow(tg_arena *a, void *items, size_t n, size_t size)
{
    if (n && (n & (n - 1)))
        return items; /* room left: capacities are powers of two */
    size_t cap = n ? n * 2 : 1;
    void *p = tg_arena_alloc(a, cap * size);
    if (p && n)
        memcpy(p, items, n * size);
    return p;
}

#define STR(tag, field) tg_rec_str(b, tag, field)
#define INT(tag, field) tg_rec_int(b, tag, (int64_t)(field))
#define FIX(tag, field) tg_rec_str(b, tag, (field)[0] ? (field) : NULL)

/* ---------------------------------------------------------------- products */

void tg_product_encode(tg_buf *b, const tg_product *p)
{
    FIX(1, p->id);
    INT(2, p->created);
    INT(3, p->updated);
    INT(4, p->livemode);
    INT(5, p->active);
    INT(6, p->deleted);
    STR(7, p->name);
    STR(8, p->description);
    put_metadata(b, 9, &p->metadata);
}

int tg_product_decode(const void *data, size_t len, tg_arena *a, tg_product *p)
{
    memset(p, 0, sizeof *p);
    tg_rec_reader r;
    tg_rec_field f;
    int rc;
    tg_rec_open(&r, data, len);
    while ((rc = tg_rec_next(&r, &f)) == 1) {
        switch (f.tag) {
        case 1: tg_rec_copy(&f, p->id, sizeof p->id); break;
        case 2: p->created = f.i; break;
        case 3: p->updated = f.i; break;
        case 4: p->livemode = f.i; break;
        case 5: p->active = f.i; break;
        case 6: p->deleted = f.i; break;
        case 7: p->name = tg_rec_strdup(&f, a); break;
        case 8: p->description = tg_rec_strdup(&f, a); break;
        case 9: rc = get_metadata(&f, a, &p->metadata); break;
        }
        if (rc < 0)
            break;
    }
    return rc;
}

/* ---------------------------------------------------------------- prices */

static void tier_encode(tg_buf *b, const void *obj)
{
    const tg_tier *t = obj;
    INT(1, t->up_to_inf);
    INT(2, t->up_to);
    if (t->has_unit)
        tg_rec_dec(b, 3, t->unit_amount);
    if (t->has_flat)
        tg_rec_dec(b, 4, t->flat_amount);
}

static int tier_decode(const tg_rec_field *outer, tg_tier *t)
{
    memset(t, 0, sizeof *t);
    tg_rec_reader r;
    tg_rec_field f;
    int rc;
    tg_rec_open(&r, outer->data, outer->len);
    while ((rc = tg_rec_next(&r, &f)) == 1) {
        switch (f.tag) {
        case 1: t->up_to_inf = f.i; break;
        case 2: t->up_to = f.i; break;
        case 3: t->has_unit = true; t->unit_amount = f.d; break;
        case 4: t->has_flat = true; t->flat_amount = f.d; break;
        }
    }
    return rc;
}

void tg_price_encode(tg_buf *b, const tg_price *p)
{
    FIX(1, p->id);
    FIX(2, p->product);
    FIX(3, p->currency);
    INT(4, p->created);
    INT(5, p->livemode);
    INT(6, p->active);
    INT(7, p->recurring);
    INT(8, p->interval);
    INT(9, p->interval_count);
    INT(10, p->metered);
    FIX(11, p->meter);
    INT(12, p->trial_period_days);
    INT(13, p->unit_amount_set);
    INT(14, p->pricing.scheme);
    tg_rec_dec(b, 15, p->pricing.unit_amount);
    INT(16, p->pricing.tiers_mode);
    for (size_t i = 0; i < p->pricing.ntiers; i++)
        put_nested(b, 17, tier_encode, &p->pricing.tiers[i]);
    INT(18, p->pricing.divide_by);
    INT(19, p->pricing.round_up);
    STR(20, p->lookup_key);
    STR(21, p->nickname);
    put_metadata(b, 22, &p->metadata);
}

int tg_price_decode(const void *data, size_t len, tg_arena *a, tg_price *p)
{
    memset(p, 0, sizeof *p);
    tg_rec_reader r;
    tg_rec_field f;
    int rc;
    tg_tier *tiers = NULL;
    tg_rec_open(&r, data, len);
    while ((rc = tg_rec_next(&r, &f)) == 1) {
        switch (f.tag) {
        case 1: tg_rec_copy(&f, p->id, sizeof p->id); break;
        case 2: tg_rec_copy(&f, p->product, sizeof p->product); break;
        case 3: tg_rec_copy(&f, p->currency, sizeof p->currency); break;
        case 4: p->created = f.i; break;
        case 5: p->livemode = f.i; break;
        case 6: p->active = f.i; break;
        case 7: p->recurring = f.i; break;
        case 8: p->interval = (tg_interval)f.i; break;
        case 9: p->interval_count = (int)f.i; break;
        case 10: p->metered = f.i; break;
        case 11: tg_rec_copy(&f, p->meter, sizeof p->meter); break;
        case 12: p->trial_period_days = f.i; break;
        case 13: p->unit_amount_set = f.i; break;
        case 14: p->pricing.scheme = (tg_billing_scheme)f.i; break;
        case 15: p->pricing.unit_amount = f.d; break;
        case 16: p->pricing.tiers_mode = (tg_tiers_mode)f.i; break;
        case 17:
            if (!(tiers = grow(a, tiers, p->pricing.ntiers, sizeof *tiers)))
                return -1;
            rc = tier_decode(&f, &tiers[p->pricing.ntiers++]);
            p->pricing.tiers = tiers;
            break;
        case 18: p->pricing.divide_by = f.i; break;
        case 19: p->pricing.round_up = f.i; break;
        case 20: p->lookup_key = tg_rec_strdup(&f, a); break;
        case 21: p->nickname = tg_rec_strdup(&f, a); break;
        case 22: rc = get_metadata(&f, a, &p->metadata); break;
        }
        if (rc < 0)
            break;
    }
    return rc;
}

/* ---------------------------------------------------------------- test clocks */

void tg_test_clock_encode(tg_buf *b, const tg_test_clock *c)
{
    FIX(1, c->id);
    INT(2, c->created);
    INT(3, c->frozen_time);
    INT(4, c->deletes_after);
    STR(5, c->name);
    INT(6, c->status);
    INT(7, c->deleted);
}

int tg_test_clock_decode(const void *data, size_t len, tg_arena *a, tg_test_clock *c)
{
    memset(c, 0, sizeof *c);
    tg_rec_reader r;
    tg_rec_field f;
    int rc;
    tg_rec_open(&r, data, len);
    while ((rc = tg_rec_next(&r, &f)) == 1) {
        switch (f.tag) {
        case 1: tg_rec_copy(&f, c->id, sizeof c->id); break;
        case 2: c->created = f.i; break;
        case 3: c->frozen_time = f.i; break;
        case 4: c->deletes_after = f.i; break;
        case 5: c->name = tg_rec_strdup(&f, a); break;
        case 6: c->status = (tg_clock_status)f.i; break;
        case 7: c->deleted = f.i; break;
        }
    }
    return rc;
}

/* ---------------------------------------------------------------- subscriptions */

static void price_encode_any(tg_buf *b, const void *obj)
{
    tg_price_encode(b, obj);
}

static void item_encode(tg_buf *b, const void *obj)
{
    const tg_sub_item *it = obj;
    FIX(1, it->id);
    INT(2, it->created);
    put_nested(b, 3, price_encode_any, &it->price);
    INT(4, it->quantity);
    put_metadata(b, 5, &it->metadata);
    INT(6, it->usage_from);
    tg_rec_dec(b, 7, it->billed);
}

static int item_decode(const tg_rec_field *outer, tg_arena *a, tg_sub_item *it)
{
    memset(it, 0, sizeof *it);
    tg_rec_reader r;
    tg_rec_field f;
    int rc;
    tg_rec_open(&r, outer->data, outer->len);
    while ((rc = tg_rec_next(&r, &f)) == 1) {
        switch (f.tag) {
        case 1: tg_rec_copy(&f, it->id, sizeof it->id); break;
        case 2: it->created = f.i; break;
        case 3: rc = tg_price_decode(f.data, f.len, a, &it->price); break;
        case 4: it->quantity = f.i; break;
        case 5: rc = get_metadata(&f, a, &it->metadata); break;
        case 6: it->usage_from = f.i; break;
        case 7: it->billed = f.d; break;
        }
        if (rc < 0)
            break;
    }
    return rc;
}

static void pending_encode(tg_buf *b, const void *obj)
{
    const tg_pending_line *l = obj;
    FIX(1, l->price);
    FIX(2, l->item);
    INT(3, l->amount);
    tg_rec_dec(b, 8, l->quantity); /* tag 4 held a whole quantity before usage lines */
    INT(9, l->proration);
    INT(5, l->period_start);
    INT(6, l->period_end);
    STR(7, l->description);
}

static int pending_decode(const tg_rec_field *outer, tg_arena *a, tg_pending_line *l)
{
    memset(l, 0, sizeof *l);
    tg_rec_reader r;
    tg_rec_field f;
    int rc;
    tg_rec_open(&r, outer->data, outer->len);
    while ((rc = tg_rec_next(&r, &f)) == 1) {
        switch (f.tag) {
        case 1: tg_rec_copy(&f, l->price, sizeof l->price); break;
        case 2: tg_rec_copy(&f, l->item, sizeof l->item); break;
        case 3: l->amount = f.i; break;
        case 4: l->quantity = tg_dec_from_int(f.i); break;
        case 5: l->period_start = f.i; break;
        case 6: l->period_end = f.i; break;
        case 7: l->description = tg_rec_strdup(&f, a); break;
        case 8: l->quantity = f.d; break;
        case 9: l->proration = f.i; break;
        }
    }
    return rc;
}

static void phase_item_encode(tg_buf *b, const void *obj)
{
    const tg_phase_item *it = obj;
    STR(1, it->price);
    INT(2, it->quantity);
}

void tg_subscription_encode(tg_buf *b, const tg_subscription *s)
{
    FIX(1, s->id);
    FIX(2, s->customer);
    FIX(3, s->currency);
    FIX(4, s->test_clock);
    FIX(5, s->latest_invoice);
    FIX(6, s->schedule);
    INT(7, s->created);
    INT(8, s->start_date);
    INT(9, s->livemode);
    INT(10, s->status);
    INT(11, s->interval);
    INT(12, s->interval_count);
    INT(13, s->billing_cycle_anchor);
    INT(14, s->anchor_day);
    INT(15, s->anchor_month);
    INT(16, s->anchor_hour);
    INT(17, s->anchor_minute);
    INT(18, s->anchor_second);
    INT(19, s->period_start);
    INT(20, s->period_end);
    INT(21, s->trial_start);
    INT(22, s->trial_end);
    INT(23, s->trial_end_behavior);
    INT(24, s->trial_reminded);
    INT(25, s->cancel_at_period_end);
    INT(26, s->cancel_at);
    INT(27, s->canceled_at);
    INT(28, s->ended_at);
    INT(29, s->paused_at);
    INT(30, s->invoice_now_on_cancel);
    STR(31, s->cancellation_reason);
    STR(32, s->default_payment_method);
    STR(33, s->description);
    INT(34, s->send_invoice);
    INT(35, s->days_until_due);
    for (size_t i = 0; i < s->nitems; i++)
        put_nested(b, 36, item_encode, &s->items[i]);
    for (size_t i = 0; i < s->npending; i++)
        put_nested(b, 37, pending_encode, &s->pending[i]);
    if (s->next_phase.set) {
        INT(38, s->next_phase.start);
        for (size_t i = 0; i < s->next_phase.nitems; i++)
            put_nested(b, 39, phase_item_encode, &s->next_phase.items[i]);
    }
    put_metadata(b, 40, &s->metadata);
    INT(41, s->free_stub);
    STR(42, s->cancellation_comment);
    STR(43, s->cancellation_feedback);
    INT(44, s->cancel_no_prorate);
    INT(45, s->licensed_until);
}

int tg_subscription_decode(const void *data, size_t len, tg_arena *a, tg_subscription *s)
{
    memset(s, 0, sizeof *s);
    tg_rec_reader r;
    tg_rec_field f;
    int rc;
    tg_rec_open(&r, data, len);
    while ((rc = tg_rec_next(&r, &f)) == 1) {
        switch (f.tag) {
        case 1: tg_rec_copy(&f, s->id, sizeof s->id); break;
        case 2: tg_rec_copy(&f, s->customer, sizeof s->customer); break;
        case 3: tg_rec_copy(&f, s->currency, sizeof s->currency); break;
        case 4: tg_rec_copy(&f, s->test_clock, sizeof s->test_clock); break;
        case 5: tg_rec_copy(&f, s->latest_invoice, sizeof s->latest_invoice); break;
        case 6: tg_rec_copy(&f, s->schedule, sizeof s->schedule); break;
        case 7: s->created = f.i; break;
        case 8: s->start_date = f.i; break;
        case 9: s->livemode = f.i; break;
        case 10: s->status = (tg_sub_status)f.i; break;
        case 11: s->interval = (tg_interval)f.i; break;
        case 12: s->interval_count = (int)f.i; break;
        case 13: s->billing_cycle_anchor = f.i; break;
        case 14: s->anchor_day = (int)f.i; break;
        case 15: s->anchor_month = (int)f.i; break;
        case 16: s->anchor_hour = (int)f.i; break;
        case 17: s->anchor_minute = (int)f.i; break;
        case 18: s->anchor_second = (int)f.i; break;
        case 19: s->period_start = f.i; break;
        case 20: s->period_end = f.i; break;
        case 21: s->trial_start = f.i; break;
        case 22: s->trial_end = f.i; break;
        case 23: s->trial_end_behavior = (tg_trial_end)f.i; break;
        case 24: s->trial_reminded = f.i; break;
        case 25: s->cancel_at_period_end = f.i; break;
        case 26: s->cancel_at = f.i; break;
        case 27: s->canceled_at = f.i; break;
        case 28: s->ended_at = f.i; break;
        case 29: s->paused_at = f.i; break;
        case 30: s->invoice_now_on_cancel = f.i; break;
        case 31: s->cancellation_reason = tg_rec_strdup(&f, a); break;
        case 32: s->default_payment_method = tg_rec_strdup(&f, a); break;
        case 33: s->description = tg_rec_strdup(&f, a); break;
        case 34: s->send_invoice = f.i; break;
        case 35: s->days_until_due = f.i; break;
        case 36:
            if (!(s->items = grow(a, s->items, s->nitems, sizeof *s->items)))
                return -1;
            rc = item_decode(&f, a, &s->items[s->nitems++]);
            break;
        case 37:
            if (!(s->pending = grow(a, s->pending, s->npending, sizeof *s->pending)))
                return -1;
            rc = pending_decode(&f, a, &s->pending[s->npending++]);
            break;
        case 38: s->next_phase.set = true; s->next_phase.start = f.i; break;
        case 39: {
            if (s->next_phase.nitems >= TG_SUB_ITEMS_MAX)
                return -1;
            tg_rec_reader ir;
            tg_rec_field g;
            size_t k = s->next_phase.nitems++;
            tg_rec_open(&ir, f.data, f.len);
            while ((rc = tg_rec_next(&ir, &g)) == 1) {
                if (g.tag == 1)
                    tg_rec_copy(&g, s->next_phase.items[k].price, TG_ID_MAX);
                else if (g.tag == 2)
                    s->next_phase.items[k].quantity = g.i;
            }
            break;
        }
        case 40: rc = get_metadata(&f, a, &s->metadata); break;
        case 41: s->free_stub = f.i; break;
        case 42: s->cancellation_comment = tg_rec_strdup(&f, a); break;
        case 43: s->cancellation_feedback = tg_rec_strdup(&f, a); break;
        case 44: s->cancel_no_prorate = f.i; break;
        case 45: s->licensed_until = f.i; break;
        }
        if (rc < 0)
            break;
    }
    return rc;
}

/* ---------------------------------------------------------------- invoices */

static void line_encode(tg_buf *b, const void *obj)
{
    const tg_invoice_line *l = obj;
    FIX(1, l->id);
    FIX(2, l->price);
    FIX(3, l->product);
    FIX(4, l->subscription_item);
    STR(5, l->description);
    INT(6, l->amount);
    tg_rec_dec(b, 7, l->quantity);
    INT(8, l->unit_amount_set);
    tg_rec_dec(b, 9, l->unit_amount);
    INT(10, l->period_start);
    INT(11, l->period_end);
    INT(12, l->proration);
    INT(13, l->metered);
    tg_rec_dec(b, 14, l->usage_before);
    INT(15, l->usage_from);
}

static int line_decode(const tg_rec_field *outer, tg_arena *a, tg_invoice_line *l)
{
    memset(l, 0, sizeof *l);
    tg_rec_reader r;
    tg_rec_field f;
    int rc;
    tg_rec_open(&r, outer->data, outer->len);
    while ((rc = tg_rec_next(&r, &f)) == 1) {
        switch (f.tag) {
        case 1: tg_rec_copy(&f, l->id, sizeof l->id); break;
        case 2: tg_rec_copy(&f, l->price, sizeof l->price); break;
        case 3: tg_rec_copy(&f, l->product, sizeof l->product); break;
        case 4: tg_rec_copy(&f, l->subscription_item, sizeof l->subscription_item); break;
        case 5: l->description = tg_rec_strdup(&f, a); break;
        case 6: l->amount = f.i; break;
        case 7: l->quantity = f.d; break;
        case 8: l->unit_amount_set = f.i; break;
        case 9: l->unit_amount = f.d; break;
        case 10: l->period_start = f.i; break;
        case 11: l->period_end = f.i; break;
        case 12: l->proration = f.i; break;
        case 13: l->metered = f.i; break;
        case 14: l->usage_before = f.d; break;
        case 15: l->usage_from = f.i; break;
        }
    }
    return rc;
}

void tg_invoice_encode(tg_buf *b, const tg_invoice *v)
{
    FIX(1, v->id);
    FIX(2, v->customer);
    FIX(3, v->subscription);
    FIX(4, v->currency);
    FIX(5, v->test_clock);
    FIX(6, v->number);
    INT(7, v->livemode);
    INT(8, v->status);
    INT(9, v->billing_reason);
    INT(10, v->created);
    INT(11, v->period_start);
    INT(12, v->period_end);
    INT(13, v->automatically_finalizes_at);
    INT(14, v->finalized_at);
    INT(15, v->paid_at);
    INT(16, v->voided_at);
    INT(17, v->marked_uncollectible_at);
    INT(18, v->auto_advance);
    INT(19, v->paid_out_of_band);
    INT(20, v->send_invoice);
    INT(21, v->due_date);
    INT(22, v->subtotal);
    INT(23, v->total);
    INT(24, v->amount_due);
    INT(25, v->amount_paid);
    INT(26, v->amount_remaining);
    for (size_t i = 0; i < v->nlines; i++)
        put_nested(b, 27, line_encode, &v->lines[i]);
    put_metadata(b, 28, &v->metadata);
}

int tg_invoice_decode(const void *data, size_t len, tg_arena *a, tg_invoice *v)
{
    memset(v, 0, sizeof *v);
    tg_rec_reader r;
    tg_rec_field f;
    int rc;
    tg_rec_open(&r, data, len);
    while ((rc = tg_rec_next(&r, &f)) == 1) {
        switch (f.tag) {
        case 1: tg_rec_copy(&f, v->id, sizeof v->id); break;
        case 2: tg_rec_copy(&f, v->customer, sizeof v->customer); break;
        case 3: tg_rec_copy(&f, v->subscription, sizeof v->subscription); break;
        case 4: tg_rec_copy(&f, v->currency, sizeof v->currency); break;
        case 5: tg_rec_copy(&f, v->test_clock, sizeof v->test_clock); break;
        case 6: tg_rec_copy(&f, v->number, sizeof v->number); break;
        case 7: v->livemode = f.i; break;
        case 8: v->status = (tg_inv_status)f.i; break;
        case 9: v->billing_reason = (tg_billing_reason)f.i; break;
        case 10: v->created = f.i; break;
        case 11: v->period_start = f.i; break;
        case 12: v->period_end = f.i; break;
        case 13: v->automatically_finalizes_at = f.i; break;
        case 14: v->finalized_at = f.i; break;
        case 15: v->paid_at = f.i; break;
        case 16: v->voided_at = f.i; break;
        case 17: v->marked_uncollectible_at = f.i; break;
        case 18: v->auto_advance = f.i; break;
        case 19: v->paid_out_of_band = f.i; break;
        case 20: v->send_invoice = f.i; break;
        case 21: v->due_date = f.i; break;
        case 22: v->subtotal = f.i; break;
        case 23: v->total = f.i; break;
        case 24: v->amount_due = f.i; break;
        case 25: v->amount_paid = f.i; break;
        case 26: v->amount_remaining = f.i; break;
        case 27:
            if (!(v->lines = grow(a, v->lines, v->nlines, sizeof *v->lines)))
                return -1;
            rc = line_decode(&f, a, &v->lines[v->nlines++]);
            break;
        case 28: rc = get_metadata(&f, a, &v->metadata); break;
        }
        if (rc < 0)
            break;
    }
    return rc;
}

/* ---------------------------------------------------------------- entitlements */

void tg_feature_encode(tg_buf *b, const tg_feature *f)
{
    FIX(1, f->id);
    INT(2, f->created);
    INT(3, f->livemode);
    INT(4, f->active);
    STR(5, f->name);
    FIX(6, f->lookup_key);
    put_metadata(b, 7, &f->metadata);
}

int tg_feature_decode(const void *data, size_t len, tg_arena *a, tg_feature *f)
{
    memset(f, 0, sizeof *f);
    tg_rec_reader r;
    tg_rec_field x;
    int rc;
    tg_rec_open(&r, data, len);
    while ((rc = tg_rec_next(&r, &x)) == 1) {
        switch (x.tag) {
        case 1: tg_rec_copy(&x, f->id, sizeof f->id); break;
        case 2: f->created = x.i; break;
        case 3: f->livemode = x.i; break;
        case 4: f->active = x.i; break;
        case 5: f->name = tg_rec_strdup(&x, a); break;
        case 6: tg_rec_copy(&x, f->lookup_key, sizeof f->lookup_key); break;
        case 7: rc = get_metadata(&x, a, &f->metadata); break;
        }
        if (rc < 0)
            break;
    }
    return rc;
}

static void limit_encode(tg_buf *b, unsigned tag, const tg_usage_limit *l)
{
    if (!l->set)
        return;
    tg_buf inner;
    tg_buf_init(&inner, TG_RECORD_MAX);
    tg_rec_str(&inner, 1, l->meter);
    tg_rec_dec(&inner, 2, l->quantity);
    tg_rec_int(&inner, 3, l->hard);
    if (inner.failed)
        b->failed = true;
    tg_rec_bytes(b, tag, inner.data ? inner.data : "", inner.len);
    tg_buf_free(&inner);
}

static int limit_decode(const tg_rec_field *outer, tg_usage_limit *l)
{
    memset(l, 0, sizeof *l);
    l->set = true;
    tg_rec_reader r;
    tg_rec_field f;
    int rc;
    tg_rec_open(&r, outer->data, outer->len);
    while ((rc = tg_rec_next(&r, &f)) == 1) {
        switch (f.tag) {
        case 1: tg_rec_copy(&f, l->meter, sizeof l->meter); break;
        case 2: l->quantity = f.d; break;
        case 3: l->hard = f.i; break;
        }
    }
    return rc;
}

void tg_product_feature_encode(tg_buf *b, const tg_product_feature *p)
{
    FIX(1, p->id);
    FIX(2, p->product);
    INT(3, p->created);
    INT(4, p->livemode);
    FIX(5, p->feature.id);
    limit_encode(b, 6, &p->limit);
}

int tg_product_feature_decode(const void *data, size_t len, tg_arena *a, tg_product_feature *p)
{
    (void)a;
    memset(p, 0, sizeof *p);
    tg_rec_reader r;
    tg_rec_field f;
    int rc;
    tg_rec_open(&r, data, len);
    while ((rc = tg_rec_next(&r, &f)) == 1) {
        switch (f.tag) {
        case 1: tg_rec_copy(&f, p->id, sizeof p->id); break;
        case 2: tg_rec_copy(&f, p->product, sizeof p->product); break;
        case 3: p->created = f.i; break;
        case 4: p->livemode = f.i; break;
        case 5: tg_rec_copy(&f, p->feature.id, sizeof p->feature.id); break;
        case 6: rc = limit_decode(&f, &p->limit); break;
        }
        if (rc < 0)
            break;
    }
    return rc;
}

static void grant_encode(tg_buf *b, const tg_grant *g)
{
    FIX(1, g->feature);
    FIX(2, g->lookup_key);
    limit_encode(b, 3, &g->limit);
    INT(4, g->period_start);
    INT(5, g->period_end);
}

static void grant_encode_any(tg_buf *b, const void *obj)
{
    grant_encode(b, obj);
}

static int grant_decode(const tg_rec_field *outer, tg_grant *g)
{
    memset(g, 0, sizeof *g);
    tg_rec_reader r;
    tg_rec_field f;
    int rc;
    tg_rec_open(&r, outer->data, outer->len);
    while ((rc = tg_rec_next(&r, &f)) == 1) {
        switch (f.tag) {
        case 1: tg_rec_copy(&f, g->feature, sizeof g->feature); break;
        case 2: tg_rec_copy(&f, g->lookup_key, sizeof g->lookup_key); break;
        case 3: rc = limit_decode(&f, &g->limit); break;
        case 4: g->period_start = f.i; break;
        case 5: g->period_end = f.i; break;
        }
        if (rc < 0)
            break;
    }
    return rc;
}

void tg_grants_encode(tg_buf *b, const tg_grant *g, size_t n)
{
    for (size_t i = 0; i < n; i++)
        put_nested(b, 1, grant_encode_any, &g[i]);
}

int tg_grants_decode(const void *data, size_t len, tg_arena *a, tg_grant **out, size_t *n)
{
    tg_rec_reader r;
    tg_rec_field f;
    int rc;
    *out = NULL;
    *n = 0;
    tg_rec_open(&r, data, len);
    while ((rc = tg_rec_next(&r, &f)) == 1) {
        if (f.tag != 1)
            continue;
        if (!(*out = grow(a, *out, *n, sizeof **out)))
            return -1;
        if ((rc = grant_decode(&f, &(*out)[(*n)++])) < 0)
            break;
    }
    return rc;
}

void tg_ent_summary_encode(tg_buf *b, const tg_entitlement_summary *s)
{
    FIX(1, s->customer);
    for (size_t i = 0; i < s->n; i++) {
        tg_buf inner;
        tg_buf_init(&inner, TG_RECORD_MAX);
        tg_rec_str(&inner, 1, s->items[i].id);
        tg_rec_str(&inner, 2, s->items[i].feature);
        tg_rec_str(&inner, 3, s->items[i].lookup_key);
        tg_rec_int(&inner, 4, s->items[i].livemode);
        if (inner.failed)
            b->failed = true;
        tg_rec_bytes(b, 2, inner.data ? inner.data : "", inner.len);
        tg_buf_free(&inner);
    }
}

int tg_ent_summary_decode(const void *data, size_t len, tg_arena *a, tg_entitlement_summary *s)
{
    memset(s, 0, sizeof *s);
    tg_rec_reader r;
    tg_rec_field f;
    int rc;
    tg_rec_open(&r, data, len);
    while ((rc = tg_rec_next(&r, &f)) == 1) {
        if (f.tag == 1) {
            tg_rec_copy(&f, s->customer, sizeof s->customer);
        } else if (f.tag == 2) {
            if (!(s->items = grow(a, s->items, s->n, sizeof *s->items)))
                return -1;
            tg_active_entitlement *e = &s->items[s->n++];
            memset(e, 0, sizeof *e);
            tg_rec_reader ir;
            tg_rec_field g;
            tg_rec_open(&ir, f.data, f.len);
            while ((rc = tg_rec_next(&ir, &g)) == 1) {
                switch (g.tag) {
                case 1: tg_rec_copy(&g, e->id, sizeof e->id); break;
                case 2: tg_rec_copy(&g, e->feature, sizeof e->feature); break;
                case 3: tg_rec_copy(&g, e->lookup_key, sizeof e->lookup_key); break;
                case 4: e->livemode = g.i; break;
                }
            }
            if (rc < 0)
                break;
        }
    }
    return rc;
}

void tg_usage_session_encode(tg_buf *b, const tg_usage_session *u)
{
    FIX(1, u->id);
    FIX(2, u->customer);
    FIX(3, u->feature);
    FIX(4, u->event_name);
    put_metadata(b, 5, &u->payload);
    INT(6, u->minute_up);
    INT(7, u->heartbeat_timeout);
    INT(8, u->livemode);
    INT(9, u->limited);
    INT(10, u->status);
    INT(11, u->created);
    INT(12, u->last_heartbeat);
    INT(13, u->ended_at);
    INT(14, u->recorded);
    INT(15, u->reserved);
    INT(16, u->seq);
    INT(17, u->pending);
}

int tg_usage_session_decode(const void *data, size_t len, tg_arena *a, tg_usage_session *u)
{
    memset(u, 0, sizeof *u);
    tg_rec_reader r;
    tg_rec_field f;
    int rc;
    tg_rec_open(&r, data, len);
    while ((rc = tg_rec_next(&r, &f)) == 1) {
        switch (f.tag) {
        case 1: tg_rec_copy(&f, u->id, sizeof u->id); break;
        case 2: tg_rec_copy(&f, u->customer, sizeof u->customer); break;
        case 3: tg_rec_copy(&f, u->feature, sizeof u->feature); break;
        case 4: tg_rec_copy(&f, u->event_name, sizeof u->event_name); break;
        case 5: rc = get_metadata(&f, a, &u->payload); break;
        case 6: u->minute_up = f.i; break;
        case 7: u->heartbeat_timeout = f.i; break;
        case 8: u->livemode = f.i; break;
        case 9: u->limited = f.i; break;
        case 10: u->status = (tg_usess_status)f.i; break;
        case 11: u->created = f.i; break;
        case 12: u->last_heartbeat = f.i; break;
        case 13: u->ended_at = f.i; break;
        case 14: u->recorded = f.i; break;
        case 15: u->reserved = f.i; break;
        case 16: u->seq = f.i; break;
        case 17: u->pending = f.i; break;
        }
        if (rc < 0)
            break;
    }
    return rc;
}

/* ---------------------------------------------------------------- events */

void tg_billing_event_encode(tg_buf *b, const tg_billing_event *e)
{
    FIX(1, e->id);
    STR(2, e->type);
    INT(3, e->created);
    INT(4, e->livemode);
    INT(5, e->kind);
    tg_buf inner;
    tg_buf_init(&inner, TG_RECORD_MAX);
    switch (e->kind) {
    case TG_OBJ_PRODUCT: tg_product_encode(&inner, &e->object.product); break;
    case TG_OBJ_PRICE: tg_price_encode(&inner, &e->object.price); break;
    case TG_OBJ_TEST_CLOCK: tg_test_clock_encode(&inner, &e->object.clock); break;
    case TG_OBJ_SUBSCRIPTION: tg_subscription_encode(&inner, &e->object.sub); break;
    case TG_OBJ_INVOICE: tg_invoice_encode(&inner, &e->object.invoice); break;
    case TG_OBJ_FEATURE: tg_feature_encode(&inner, &e->object.feature); break;
    case TG_OBJ_ENTITLEMENT_SUMMARY: tg_ent_summary_encode(&inner, &e->object.summary); break;
    }
    if (inner.failed)
        b->failed = true;
    tg_rec_bytes(b, 6, inner.data ? inner.data : "", inner.len);
    tg_buf_free(&inner);
}

int tg_billing_event_decode(const void *data, size_t len, tg_arena *a, tg_billing_event *e)
{
    memset(e, 0, sizeof *e);
    tg_rec_reader r;
    tg_rec_field f;
    int rc;
    tg_rec_open(&r, data, len);
    while ((rc = tg_rec_next(&r, &f)) == 1) {
        switch (f.tag) {
        case 1: tg_rec_copy(&f, e->id, sizeof e->id); break;
        case 2: e->type = tg_rec_strdup(&f, a); break;
        case 3: e->created = f.i; break;
        case 4: e->livemode = f.i; break;
        case 5: e->kind = (tg_obj_kind)f.i; break;
        case 6:
            switch (e->kind) { /* the kind field is written first */
            case TG_OBJ_PRODUCT: rc = tg_product_decode(f.data, f.len, a, &e->object.product); break;
            case TG_OBJ_PRICE: rc = tg_price_decode(f.data, f.len, a, &e->object.price); break;
            case TG_OBJ_TEST_CLOCK:
                rc = tg_test_clock_decode(f.data, f.len, a, &e->object.clock);
                break;
            case TG_OBJ_SUBSCRIPTION:
                rc = tg_subscription_decode(f.data, f.len, a, &e->object.sub);
                break;
            case TG_OBJ_INVOICE: rc = tg_invoice_decode(f.data, f.len, a, &e->object.invoice); break;
            case TG_OBJ_FEATURE: rc = tg_feature_decode(f.data, f.len, a, &e->object.feature); break;
            case TG_OBJ_ENTITLEMENT_SUMMARY:
                rc = tg_ent_summary_decode(f.data, f.len, a, &e->object.summary);
                break;
            }
            break;
        }
        if (rc < 0)
            break;
    }
    return rc;
}
