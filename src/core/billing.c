/* billing.c -- subscriptions, invoices and the engine that moves them through time.
 *
 * A subscription is due at its next step: the trial reminder (3 days before the trial ends),
 * the end of its period (a renewal, the trial's end, or its cancellation), or a cancel_at
 * inside the period. A draft invoice is due at its automatic finalization. The object row's
 * `due` column holds that time, so the scheduler and test clocks find work with one indexed
 * read, and each step runs in the writer's transaction together with the invoice and events
 * it creates: a crash leaves a step done or not done, never half done, and running a step
 * twice is impossible because the step moves `due` forward in the same commit.
 *
 * Money: each line is priced exactly (pricing.c) and rounded once to the currency's minor
 * unit; prorations multiply the exact charge by (seconds remaining / seconds in the period)
 * before that one rounding. Invoice totals are sums of rounded lines.
 *
 * Metered usage is billed in arrears. An item remembers `usage_from` (when its usage starts
 * counting: the start, the trial's end, a resume) and `billed` (what invoices have charged).
 * A renewal's metered line is usage[usage_from, period end) - billed, taken again when the
 * draft finalizes, so usage that arrives during the grace period is included and usage that
 * arrives later (for an already invoiced period) is carried into the next invoice instead of
 * being lost. Meters with the `last` formula bill the period's last value instead.
 *
 * Usage is stored per UTC minute, so a boundary inside a minute gives the whole minute to one
 * side: a minute belongs to the interval it starts in (minute_up below). A line that ends
 * inside a minute records, per (customer, meter), that it billed through the minute's end
 * (bill_through), and an item of any of the customer's subscriptions that starts counting that
 * meter inside the minute starts after it (usage_start): no minute is counted by two items.
 *
 * Schedules: each is an object of its own (KIND_SCHEDULE) naming its subscription, so that it
 * is found by its id and listed in the order schedules were made, and a subscription can have
 * one after another. While a schedule is active, its plan (the next phase, its metadata) lives
 * in the subscription, because the engine applies the next phase at a renewal, in the
 * subscription's own step; its row holds only what identifies it. When it ends (released by a
 * request or by its last phase starting, or canceled with its subscription in sub_end, the one
 * place a subscription ends), its row becomes its final state: a copy of the subscription as it
 * was then (schedule_end), written in the same transaction as the change that ended it. An
 * ended schedule is never changed again. Directories from before schedules had rows get them
 * at start-up (tg_billing_schedule_rows).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/str.h"
#include "core/billing_internal.h"
#include "core/metadata.h"
#include "core/metering.h"
#include "core/money.h"

#define FAILED_MAX 64       /* objects whose step failed, remembered for a retry later */
#define FAILED_RETRY 60     /* seconds before the scheduler tries a failed step again */
#define TRIAL_MAX (730 * 86400) /* a trial ends at most two years after its subscription starts */

struct tg_billing {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop, started;
    int64_t grace;
    /* Steps that failed on the real clock: skipped until retry_at so that one broken object
     * neither stops everybody's billing nor fills the log every second. Writer thread only. */
    struct failed_step {
        char id[TG_ID_MAX];
        int64_t retry_at;
    } failed[FAILED_MAX];
};

static bool step_failed_recently(struct tg_billing *b, const char *id, int64_t now)
{
    for (int i = 0; b && i < FAILED_MAX; i++)
        if (b->failed[i].retry_at > now && strcmp(b->failed[i].id, id) == 0)
            return true;
    return false;
}

static void step_failed(struct tg_billing *b, const char *id, int64_t now)
{
    if (!b)
        return;
    int slot = 0;
    for (int i = 0; i < FAILED_MAX; i++)
        if (b->failed[i].retry_at < b->failed[slot].retry_at)
            slot = i;
    tg_strlcpy(b->failed[slot].id, id, sizeof b->failed[slot].id);
    b->failed[slot].retry_at = now + FAILED_RETRY;
}

static int64_t grace_of(tg_service *svc)
{
    struct tg_billing *b = *tg_service_billing(svc);
    return b ? b->grace : TG_GRACE_DEFAULT;
}

void tg_billing_set_grace(tg_service *svc, int64_t seconds)
{
    struct tg_billing *b = *tg_service_billing(svc);
    if (b && seconds >= 0 && seconds <= TG_GRACE_MAX)
        b->grace = seconds;
}

/* The words stored in the object row's lookup column (list filters by status), NULL ended. */
const char *const tg_sub_status_words[] = {"trialing", "active", "past_due", "canceled",
                                           "paused", NULL};
const char *const tg_inv_status_words[] = {"draft", "open", "paid", "uncollectible", "void",
                                           NULL};

static int load_sub(bctx *c, const char *id, const char *param, tg_subscription *out)
{
    return bill_load(c, KIND_SUB, id, param, bill_decode_sub, out);
}

static int load_invoice(bctx *c, const char *id, const char *param, tg_invoice *out)
{
    return bill_load(c, KIND_INVOICE, id, param, bill_decode_invoice, out);
}

static int64_t interval_seconds(tg_interval unit, int count)
{
    static const int64_t unit_s[] = {86400, 7 * 86400, 31 * 86400, 366 * 86400};
    return unit_s[unit] * count;
}

/* ---------------------------------------------------------------- saving and due times */

static bool sub_live(const tg_subscription *s)
{
    return s->status != TG_SUB_CANCELED;
}

/* The next time the engine must look at s (0: never). A paused subscription has no period:
 * only a cancel_at ends its wait. */
static int64_t sub_due(const tg_subscription *s)
{
    if (!sub_live(s))
        return 0;
    if (s->status == TG_SUB_PAUSED)
        return s->cancel_at;
    int64_t due = s->period_end;
    if (s->status == TG_SUB_TRIALING && !s->trial_reminded) {
        int64_t remind = s->trial_end - TG_TRIAL_REMINDER;
        due = remind < due ? remind : due;
    }
    if (s->cancel_at && s->cancel_at < due)
        due = s->cancel_at;
    return due;
}

static int save_sub(bctx *c, const tg_subscription *s)
{
    tg_buf b;
    tg_buf_init(&b, TG_RECORD_MAX);
    tg_subscription_encode(&b, s);
    /* The prices and products of its items, for GET /v1/subscriptions?price= and for
     * finding the subscribers of a product whose features change; the items' ids, for
     * finding the subscription of an item (/v1/subscription_items/:id). */
    size_t cap = 16 + s->nitems * 3 * (TG_ID_MAX + 10);
    char *tags = tg_arena_alloc(c->a, cap);
    if (!tags) {
        tg_buf_free(&b);
        return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
    }
    size_t len = (size_t)snprintf(tags, cap, " ");
    for (size_t i = 0; i < s->nitems; i++)
        len += (size_t)snprintf(tags + len, cap - len, "price=%s product=%s item=%s ",
                                s->items[i].price.id, s->items[i].price.product,
                                s->items[i].id);
    tg_obj o = {.kind = KIND_SUB, .created = s->created, .active = sub_live(s),
                .customer = s->customer, .lookup = tg_sub_status_words[s->status],
                .clock = s->test_clock[0] ? s->test_clock : NULL, .due = sub_due(s),
                .tags = tags};
    tg_strlcpy(o.id, s->id, sizeof o.id);
    int rc = bill_save(c, &o, &b);
    /* Whatever changed may change what the customer is entitled to, and over which period. */
    return rc ? rc : ent_refresh(c, s->customer);
}

static int save_invoice(bctx *c, const tg_invoice *v)
{
    tg_buf b;
    tg_buf_init(&b, TG_RECORD_MAX);
    tg_invoice_encode(&b, v);
    tg_obj o = {.kind = KIND_INVOICE, .created = v->created, .active = true,
                .customer = v->customer, .parent = v->subscription[0] ? v->subscription : NULL,
                .lookup = tg_inv_status_words[v->status],
                .clock = v->test_clock[0] ? v->test_clock : NULL,
                .due = v->status == TG_INV_DRAFT && v->auto_advance
                           ? v->automatically_finalizes_at : 0};
    tg_strlcpy(o.id, v->id, sizeof o.id);
    return bill_save(c, &o, &b);
}

/* ---------------------------------------------------------------- schedules */

static const char *const sched_status_words[] = {"active", "released", "canceled"};

static int decode_schedule(const void *d, size_t n, tg_arena *a, void *out)
{
    return tg_sub_schedule_decode(d, n, a, out);
}

static int load_schedule(bctx *c, const char *id, tg_sub_schedule *out)
{
    return bill_load(c, KIND_SCHEDULE, id, "id", decode_schedule, out);
}

/* Stores schedule k; k->sub gives the row's customer and test clock. The lookup column is the
 * status, and for an ended schedule the time it ended too ("released:001767225600", the time
 * in 12 digits), so that the list's released_at and canceled_at filters are ranges of it. */
static int save_schedule(bctx *c, const tg_sub_schedule *k)
{
    char lookup[48];
    int64_t at = k->status == TG_SCHED_RELEASED ? k->released_at : k->canceled_at;
    if (k->ended)
        snprintf(lookup, sizeof lookup, "%s:%012lld", sched_status_words[k->status],
                 (long long)at);
    else
        snprintf(lookup, sizeof lookup, "%s", sched_status_words[k->status]);
    tg_buf b;
    tg_buf_init(&b, TG_RECORD_MAX);
    tg_sub_schedule_encode(&b, k);
    tg_obj o = {.kind = KIND_SCHEDULE, .created = k->created, .active = !k->ended,
                .customer = k->sub.customer, .parent = k->subscription, .lookup = lookup,
                .clock = k->sub.test_clock[0] ? k->sub.test_clock : NULL};
    tg_strlcpy(o.id, k->id, sizeof o.id);
    return bill_save(c, &o, &b);
}

/* The row of s's schedule as versions before schedule rows showed it (they kept a schedule
 * only in its subscription): created with s, canceled with it if s is. */
static void schedule_from_sub(const tg_subscription *s, tg_sub_schedule *k)
{
    memset(k, 0, sizeof *k);
    tg_strlcpy(k->id, s->schedule, sizeof k->id);
    tg_strlcpy(k->subscription, s->id, sizeof k->subscription);
    k->created = s->created;
    k->sub = *s;
    if (!sub_live(s)) {
        k->status = TG_SCHED_CANCELED;
        k->ended = true;
        k->canceled_at = s->ended_at ? s->ended_at : s->canceled_at;
    }
}

/* s's schedule ends at t, released or canceled: its row keeps s as it is now (the phases and
 * metadata it had) as its final state, also returned in *k unless k is NULL. A schedule
 * without a row (an older version made it after start-up gave the others theirs: a binary
 * run on the directory in between) gets it now. */
static int schedule_end(bctx *c, const tg_subscription *s, tg_sched_status status, int64_t t,
                        tg_sub_schedule *k)
{
    tg_sub_schedule mine;
    if (!k)
        k = &mine;
    int rc = load_schedule(c, s->schedule, k);
    if (rc == TG_ENOTFOUND) {
        tg_err_clear(c->err);
        schedule_from_sub(s, k);
        rc = TG_OK;
    }
    if (rc)
        return rc;
    k->status = status;
    k->ended = true;
    *(status == TG_SCHED_RELEASED ? &k->released_at : &k->canceled_at) = t;
    k->sub = *s;
    return save_schedule(c, k);
}

/* The subscription goes on without a plan (its schedule released). */
static void sub_drop_schedule(tg_subscription *s)
{
    s->schedule[0] = '\0';
    s->next_phase.set = false;
    s->next_phase.nitems = 0;
    s->schedule_metadata = (tg_metadata){0};
}

/* ---------------------------------------------------------------- periods */

static int64_t next_boundary(const tg_subscription *s, int64_t t)
{
    int64_t start, end;
    tg_period_containing(s->billing_cycle_anchor, s->interval, s->interval_count, s->anchor_day,
                         t, &start, &end);
    return end;
}

/* ---------------------------------------------------------------- lines */

/* The product's name for line descriptions ("" when it is gone). */
static const char *product_name(bctx *c, const char *product)
{
    tg_product p;
    tg_err ignore = {0};
    tg_err *saved = c->err;
    c->err = &ignore;
    int rc = bill_load_product(c, product, NULL, &p);
    c->err = saved;
    return rc || !p.name ? "" : p.name;
}

static int new_line(bctx *c, tg_invoice *v, tg_invoice_line **out)
{
    tg_invoice_line *lines = tg_arena_alloc(c->a, (v->nlines + 1) * sizeof *lines);
    if (!lines)
        return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
    if (v->nlines)
        memcpy(lines, v->lines, v->nlines * sizeof *lines);
    v->lines = lines;
    *out = &lines[v->nlines++];
    memset(*out, 0, sizeof **out);
    return bill_new_id(c, (*out)->id, "il_");
}

static void line_from_price(tg_invoice_line *l, const tg_sub_item *it)
{
    tg_strlcpy(l->price, it->price.id, sizeof l->price);
    tg_strlcpy(l->product, it->price.product, sizeof l->product);
    tg_strlcpy(l->subscription_item, it->id, sizeof l->subscription_item);
    l->unit_amount_set = it->price.pricing.scheme == TG_SCHEME_PER_UNIT;
    l->unit_amount = it->price.pricing.unit_amount;
}

/* The charge of a price for quantity q over part of its period: num/den of the full
 * amount (1/1 for a whole period), rounded once. */
static int price_amount(bctx *c, const tg_price *p, tg_dec q, int64_t num, int64_t den,
                        int64_t *amount)
{
    tg_dec tq;
    tg_money_acc acc = tg_money_acc_zero();
    if (tg_pricing_quantity(&p->pricing, q, &tq) || tg_pricing_charge(&p->pricing, tq, &acc) ||
        tg_money_acc_mul_int(&acc, num) || tg_money_acc_round(&acc, den, amount))
        return tg_err_set(c->err, TG_EINVAL, NULL,
                          "The amount for price %s overflows.", p->id);
    return TG_OK;
}

/* A licensed line for [from, to) within the period [pstart, pend): prorated when it covers
 * part of it. trial: the line is free ("Trial period for ..."). */
static int licensed_line(bctx *c, tg_invoice *v, const tg_sub_item *it, int64_t from, int64_t to,
                         int64_t pstart, int64_t pend, bool trial)
{
    tg_invoice_line *l;
    int rc = new_line(c, v, &l);
    if (rc)
        return rc;
    line_from_price(l, it);
    l->quantity = tg_dec_from_int(it->quantity);
    l->period_start = from;
    l->period_end = to;
    const char *name = product_name(c, it->price.product);
    char desc[400];
    if (trial) {
        snprintf(desc, sizeof desc, "Trial period for %s", name);
    } else {
        int64_t num = to - from, den = pend - pstart;
        if (num <= 0 || den <= 0)
            num = den = 1;
        rc = price_amount(c, &it->price, l->quantity, num, den, &l->amount);
        if (rc)
            return rc;
        snprintf(desc, sizeof desc, "%s%lld × %s", num < den ? "Remaining time on " : "",
                 (long long)it->quantity, name);
    }
    l->description = tg_arena_strdup(c->a, desc);
    return l->description ? TG_OK : tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
}

/* Usage is counted by UTC minute, and a minute belongs to the interval it starts in: a line
 * ending inside a minute (a period's end, a cancellation, a removal, a meter change) takes
 * that whole minute, up to minute_up(end), and records it (bill_through). An item starting
 * inside a minute counts that minute too, unless a line of the customer on the same meter has
 * already taken it (then it starts at minute_up: usage_start); when an item removed or moved
 * away on the same subscription has another counting its meter from this minute, the new one
 * takes the minute and the old one ends at its start (bill_ended_items). */
static int64_t minute_up(int64_t t)
{
    return tg_window_start(t + 59, 60);
}

/* Where paid usage starts after a free stretch (a trial, a pause) that ends at t: a minute
 * belongs to the interval it starts in, so the minute t falls in is the free stretch's. */
static int64_t paid_from(int64_t t)
{
    return minute_up(t);
}

/* A customer's usage of meter over [from, to) (0 when the meter is gone). */
static int usage_of(bctx *c, const char *customer, const char *meter, int64_t from, int64_t to,
                    tg_dec *q)
{
    int rc = tg_usage_between(c->svc, c->s, c->scope, meter, customer, from, to, q, NULL,
                              c->err);
    if (rc == TG_ENOTFOUND)
        *q = 0;
    return rc == TG_ENOTFOUND ? TG_OK : rc;
}

/* The instant up to which a customer's usage of a meter has been billed by a line that ended
 * (a period's, a cancellation's or a removal's: they bill through minute_up(their end)), kept
 * as a setting per (customer, meter); 0 when none. An item of any subscription of the customer
 * that starts counting that meter earlier, inside the minute such a line took, starts there. */
static void billed_through_name(const bctx *c, const char *customer, const char *meter,
                                char *out, size_t cap)
{
    snprintf(out, cap, "billed_through:%s:%d:%s:%s", c->scope->account, c->scope->livemode,
             customer, meter);
}

static int64_t billed_through(bctx *c, const char *customer, const char *meter)
{
    char name[TG_ID_MAX * 3 + 40], *value = NULL;
    tg_err ignore = {0};
    billed_through_name(c, customer, meter, name, sizeof name);
    if (c->s->ops->setting_get(c->s, name, c->a, &value, &ignore) == TG_OK && value)
        return strtoll(value, NULL, 10);
    return 0;
}

/* Records that a line bills customer's usage of meter up to minute_up(end). */
static int bill_through(bctx *c, const char *customer, const char *meter, int64_t end)
{
    int64_t t = minute_up(end);
    if (billed_through(c, customer, meter) >= t)
        return TG_OK;
    char name[TG_ID_MAX * 3 + 40], value[24];
    billed_through_name(c, customer, meter, name, sizeof name);
    snprintf(value, sizeof value, "%lld", (long long)t);
    return c->s->ops->setting_put(c->s, name, value, c->err);
}

/* Where the usage of a metered item of s on price p starting at t counts from: t, or the end
 * of the minute containing t when a line that ended in that minute has billed it. */
static int64_t usage_start(bctx *c, const tg_subscription *s, const tg_price *p, int64_t t)
{
    int64_t through = p->metered ? billed_through(c, s->customer, p->meter) : 0;
    return through > t ? through : t;
}

/* Usage of a metered item billable on a line for the period [pstart, pend): for additive
 * meters what is unbilled since usage_from, net: usage that arrived late for invoiced periods
 * is carried here, and so is negative usage (a negative event or the cancellation of an event
 * of an invoiced period), which lowers this line and, beyond it, later ones; for `last`
 * meters the period's last value. *cum (may be NULL) gets the item's net usage since
 * usage_from: what it has billed once this line is, unless that is less than billed. */
static int metered_usage(bctx *c, const char *customer, const char *meter, int64_t usage_from,
                         int64_t pstart, int64_t pend, tg_dec billed, tg_dec *q, tg_dec *cum)
{
    tg_meter m;
    tg_err ignore = {0};
    tg_dec all = billed;
    int64_t to = minute_up(pend);
    int rc = TG_OK;
    if (c->s->ops->meter_get(c->s, c->scope, meter, &m, &ignore)) {
        *q = 0; /* the meter is gone: nothing more can be measured */
    } else if (m.formula == TG_FORMULA_LAST) {
        rc = usage_of(c, customer, meter, pstart > usage_from ? pstart : usage_from, to, q);
    } else {
        rc = usage_of(c, customer, meter, usage_from, to, &all);
        if (!rc && tg_dec_sub(all, billed, q))
            return tg_err_set(c->err, TG_EINVAL, NULL, "Usage overflows.");
    }
    if (rc)
        return rc;
    if (*q < 0)
        *q = 0; /* negative usage is billed as 0 and stays owed against later usage */
    if (cum)
        *cum = all;
    return TG_OK;
}

static int metered_quantity(bctx *c, const tg_subscription *s, const tg_sub_item *it,
                            int64_t pstart, int64_t pend, tg_dec billed, tg_dec *q, tg_dec *cum)
{
    return metered_usage(c, s->customer, it->price.meter, it->usage_from, pstart, pend, billed,
                         q, cum);
}

static int metered_line_price(bctx *c, tg_invoice_line *l, const tg_price *p)
{
    int rc = price_amount(c, p, l->quantity, 1, 1, &l->amount);
    if (rc)
        return rc;
    char desc[400];
    snprintf(desc, sizeof desc, "Usage of %s", product_name(c, p->product));
    l->description = tg_arena_strdup(c->a, desc);
    return l->description ? TG_OK : tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
}

static int metered_line(bctx *c, tg_invoice *v, const tg_subscription *s, const tg_sub_item *it,
                        int64_t pstart, int64_t pend)
{
    tg_invoice_line *l;
    int rc = new_line(c, v, &l);
    if (rc)
        return rc;
    line_from_price(l, it);
    l->metered = true;
    l->usage_before = it->billed;
    l->usage_from = it->usage_from;
    l->period_start = pstart;
    l->period_end = pend;
    rc = metered_quantity(c, s, it, pstart, pend, it->billed, &l->quantity, NULL);
    return rc ? rc : metered_line_price(c, l, &it->price);
}

/* The metered line of an item whose usage of [pstart, pend) is billed now (a renewal or a
 * cancellation): it bills through minute_up(pend). */
static int ended_metered_line(bctx *c, tg_invoice *v, const tg_subscription *s,
                              const tg_sub_item *it, int64_t pstart, int64_t pend)
{
    int rc = metered_line(c, v, s, it, pstart, pend);
    return rc ? rc : bill_through(c, s->customer, it->price.meter, pend);
}

static int pending_lines(bctx *c, tg_invoice *v, tg_subscription *s)
{
    for (size_t i = 0; i < s->npending; i++) {
        const tg_pending_line *p = &s->pending[i];
        tg_invoice_line *l;
        int rc = new_line(c, v, &l);
        if (rc)
            return rc;
        tg_strlcpy(l->price, p->price, sizeof l->price);
        tg_strlcpy(l->subscription_item, p->item, sizeof l->subscription_item);
        for (size_t k = 0; k < s->nitems; k++)
            if (strcmp(s->items[k].price.id, p->price) == 0)
                tg_strlcpy(l->product, s->items[k].price.product, sizeof l->product);
        l->amount = p->amount;
        l->quantity = p->quantity;
        l->period_start = p->period_start;
        l->period_end = p->period_end;
        l->proration = p->proration;
        l->metered = false; /* a fixed amount: finalization does not recompute it */
        l->description = p->description;
    }
    s->npending = 0;
    return TG_OK;
}

static int invoice_totals(bctx *c, tg_invoice *v)
{
    int64_t sum = 0;
    for (size_t i = 0; i < v->nlines; i++)
        if (__builtin_add_overflow(sum, v->lines[i].amount, &sum))
            return tg_err_set(c->err, TG_EINVAL, NULL, "The total of invoice %s overflows.",
                              v->id);
    v->subtotal = v->total = sum;
    /* A negative total (credits) is not owed; Tollgate keeps no customer balance, so the
     * credit is not carried. */
    v->amount_due = sum > 0 ? sum : 0;
    v->amount_remaining = v->amount_due - v->amount_paid;
    return TG_OK;
}

/* ---------------------------------------------------------------- invoices */

/* The customer's email and name onto v, as they are now (a deleted customer's stay). */
static void invoice_copy_customer(bctx *c, tg_invoice *v)
{
    tg_customer cu;
    tg_err ignore = {0};
    if (c->s->ops->customer_get(c->s, c->scope, v->customer, c->a, &cu, &ignore) || cu.deleted)
        return;
    v->customer_email = cu.email;
    v->customer_name = cu.name;
    v->customer_contact = cu.contact;
}

static int invoice_new(bctx *c, const tg_subscription *s, tg_billing_reason reason,
                       int64_t pstart, int64_t pend, tg_invoice *v)
{
    memset(v, 0, sizeof *v);
    int rc = bill_new_id(c, v->id, "in_");
    if (rc)
        return rc;
    tg_strlcpy(v->customer, s->customer, sizeof v->customer);
    tg_strlcpy(v->subscription, s->id, sizeof v->subscription);
    tg_strlcpy(v->currency, s->currency, sizeof v->currency);
    tg_strlcpy(v->test_clock, s->test_clock, sizeof v->test_clock);
    v->livemode = c->scope->livemode;
    v->status = TG_INV_DRAFT;
    v->billing_reason = reason;
    v->created = c->now;
    v->period_start = pstart;
    v->period_end = pend;
    v->auto_advance = true;
    v->automatically_finalizes_at = c->now + grace_of(c->svc);
    v->send_invoice = s->send_invoice;
    invoice_copy_customer(c, v);
    return TG_OK;
}

static bool customer_has_payment_method(bctx *c, const tg_subscription *s)
{
    if (s->default_payment_method)
        return true;
    tg_customer cu;
    tg_err ignore = {0};
    if (c->s->ops->customer_get(c->s, c->scope, s->customer, c->a, &cu, &ignore))
        return false;
    return cu.default_payment_method != NULL;
}

static int next_invoice_number(bctx *c, char *out, size_t cap)
{
    char name[80], *value = NULL;
    snprintf(name, sizeof name, "invoice_number:%s:%d", c->scope->account, c->scope->livemode);
    tg_err ignore = {0};
    int64_t n = 0;
    if (c->s->ops->setting_get(c->s, name, c->a, &value, &ignore) == TG_OK && value)
        n = strtoll(value, NULL, 10);
    char next[24];
    snprintf(next, sizeof next, "%lld", (long long)(n + 1));
    int rc = c->s->ops->setting_put(c->s, name, next, c->err);
    snprintf(out, cap, "TG-%06lld", (long long)(n + 1));
    return rc;
}

static int sub_set_status(bctx *c, tg_subscription *s, tg_sub_status status)
{
    if (s->status == status)
        return TG_OK;
    s->status = status;
    return bill_emit(c, "customer.subscription.updated", TG_OBJ_SUBSCRIPTION, s);
}

static int invoice_mark_paid(bctx *c, tg_invoice *v)
{
    v->status = TG_INV_PAID;
    v->paid_at = c->now;
    v->amount_paid = v->amount_due;
    v->amount_remaining = 0;
    v->auto_advance = false;
    return bill_emit(c, "invoice.paid", TG_OBJ_INVOICE, v);
}

/* Whether a line's price counts usage of meter (an item may have changed meters since). */
static bool line_on_meter(bctx *c, const tg_invoice_line *l, const char *meter)
{
    tg_price p;
    tg_err ignore = {0}, *saved = c->err;
    c->err = &ignore;
    int rc = bill_load_price(c, l->price, NULL, &p);
    c->err = saved;
    return rc == TG_OK && strcmp(p.meter, meter) == 0;
}

/* Whether metered line l, whose price is on meter, still counts the usage of item it: the
 * line's item, on the same meter and still counting from where it did when the line was made
 * (an item moved to another meter, and maybe back, counts again from the move). */
static bool item_counts_line(const tg_invoice_line *l, const tg_sub_item *it, const char *meter)
{
    return strcmp(it->id, l->subscription_item) == 0 && strcmp(it->price.meter, meter) == 0 &&
           it->usage_from == l->usage_from;
}

/* Finalizes a draft: metered lines take the usage received meanwhile, items record what is
 * now billed, the invoice gets its number and is open (or paid when nothing is due).
 * s is the invoice's subscription (loaded by the caller, saved by the caller), or NULL. */
static int invoice_finalize(bctx *c, tg_invoice *v, tg_subscription *s)
{
    for (size_t i = 0; i < v->nlines; i++) {
        tg_invoice_line *l = &v->lines[i];
        if (!l->metered)
            continue;
        /* The line keeps its own price (a change made during the grace period applies to the
         * next period) and its own usage start (its item may be gone). */
        tg_price p;
        tg_err ignore = {0}, *saved = c->err;
        c->err = &ignore;
        int rc = bill_load_price(c, l->price, NULL, &p);
        c->err = saved;
        if (rc)
            continue; /* unreadable price: the line keeps the draft's amount */
        /* Its item, unless the item has started counting again since (it moved to another
         * meter, and maybe back): then the line counts with its own usage start. */
        tg_sub_item *it = NULL;
        for (size_t k = 0; s && k < s->nitems; k++)
            if (item_counts_line(l, &s->items[k], p.meter))
                it = &s->items[k];
        tg_dec billed;
        rc = metered_usage(c, v->customer, p.meter, it ? it->usage_from : l->usage_from,
                           l->period_start, l->period_end, l->usage_before, &l->quantity,
                           &billed);
        if (!rc)
            rc = metered_line_price(c, l, &p);
        if (rc)
            return rc;
        if (it && billed > it->billed)
            it->billed = billed;
    }
    int rc = invoice_totals(c, v);
    if (!rc)
        rc = next_invoice_number(c, v->number, sizeof v->number);
    if (rc)
        return rc;
    v->status = TG_INV_OPEN;
    v->finalized_at = c->now;
    v->automatically_finalizes_at = 0;
    invoice_copy_customer(c, v);
    if (v->send_invoice)
        v->due_date = c->now + (s ? s->days_until_due : 30) * 86400;
    if ((rc = bill_emit(c, "invoice.finalized", TG_OBJ_INVOICE, v)))
        return rc;
    if (v->amount_due == 0)
        return invoice_mark_paid(c, v);
    /* Payment is collected outside Tollgate. A subscription charged automatically whose
     * customer has no payment method cannot be charged: it is past due until paid. */
    if (s && !v->send_invoice && s->status == TG_SUB_ACTIVE && !customer_has_payment_method(c, s))
        return sub_set_status(c, s, TG_SUB_PAST_DUE);
    return TG_OK;
}

static int invoice_created(bctx *c, tg_invoice *v, tg_subscription *s)
{
    int rc = invoice_totals(c, v);
    if (rc)
        return rc;
    tg_strlcpy(s->latest_invoice, v->id, sizeof s->latest_invoice);
    return bill_emit(c, "invoice.created", TG_OBJ_INVOICE, v);
}

/* The subscription's draft invoices, oldest first (at most a few: one per period in grace). */
static int sub_drafts(bctx *c, const tg_subscription *s, tg_invoice **out, size_t *n)
{
    const char *draft = tg_inv_status_words[TG_INV_DRAFT];
    tg_obj_filter f = {.parent = s->id, .active = -1, .lookup_any = &draft, .nlookup = 1};
    tg_page page = {.limit = 100};
    bool more;
    int rc = bill_list(c, KIND_INVOICE, &f, &page, bill_decode_invoice, sizeof **out,
                       (void **)out, n, &more);
    for (size_t i = 0, j = *n ? *n - 1 : 0; !rc && i < j; i++, j--) {
        tg_invoice t = (*out)[i];
        (*out)[i] = (*out)[j];
        (*out)[j] = t;
    }
    return rc;
}

/* What an item has billed counting its lines on drafts not finalized yet, with the usage
 * those lines would take if they finalized now. */
static int billed_with_drafts(bctx *c, const tg_subscription *s, const tg_sub_item *it,
                              tg_dec *billed)
{
    tg_invoice *drafts;
    size_t n;
    *billed = it->billed;
    int rc = sub_drafts(c, s, &drafts, &n);
    for (size_t i = 0; !rc && i < n; i++)
        for (size_t k = 0; !rc && k < drafts[i].nlines; k++) {
            const tg_invoice_line *l = &drafts[i].lines[k];
            tg_dec q, total;
            if (!l->metered || !item_counts_line(l, it, it->price.meter) ||
                !line_on_meter(c, l, it->price.meter))
                continue;
            rc = metered_quantity(c, s, it, l->period_start, l->period_end, l->usage_before,
                                  &q, &total);
            if (!rc && total > *billed)
                *billed = total;
        }
    return rc;
}

/* Finalizes every draft of the subscription, oldest first: before a new invoice bills what
 * comes after them, what they bill must be settled. */
static int finalize_drafts(bctx *c, tg_subscription *s)
{
    tg_invoice *drafts;
    size_t n;
    int rc = sub_drafts(c, s, &drafts, &n);
    for (size_t i = 0; !rc && i < n; i++) {
        rc = invoice_finalize(c, &drafts[i], s);
        if (!rc)
            rc = save_invoice(c, &drafts[i]);
    }
    return rc;
}

/* ---------------------------------------------------------------- the engine */

static bool has_metered(const tg_subscription *s)
{
    for (size_t i = 0; i < s->nitems; i++)
        if (s->items[i].price.metered)
            return true;
    return false;
}

/* Ends the subscription at t; final_invoice bills its unbilled usage and pending lines. */
static int sub_end(bctx *c, tg_subscription *s, int64_t t, bool final_invoice)
{
    int rc = finalize_drafts(c, s);
    if (rc)
        return rc;
    /* Usage during a trial or a pause is not billed. */
    bool usage = s->status != TG_SUB_TRIALING && s->status != TG_SUB_PAUSED;
    if (final_invoice && s->status != TG_SUB_TRIALING && ((usage && has_metered(s)) || s->npending)) {
        tg_invoice v;
        if ((rc = invoice_new(c, s, TG_REASON_SUBSCRIPTION_CYCLE, s->period_start, t, &v)))
            return rc;
        for (size_t i = 0; !rc && usage && i < s->nitems; i++)
            if (s->items[i].price.metered)
                rc = ended_metered_line(c, &v, s, &s->items[i], s->period_start, t);
        if (!rc)
            rc = pending_lines(c, &v, s);
        if (!rc)
            rc = invoice_created(c, &v, s);
        /* The subscription is over: its last invoice finalizes at once. */
        if (!rc)
            rc = invoice_finalize(c, &v, s);
        if (!rc)
            rc = save_invoice(c, &v);
        if (rc)
            return rc;
    }
    s->status = TG_SUB_CANCELED;
    s->ended_at = t;
    if (!s->canceled_at)
        s->canceled_at = t;
    s->period_end = s->period_end > t ? t : s->period_end;
    /* Its schedule is canceled with it (the subscription keeps naming it). */
    if (s->schedule[0] && (rc = schedule_end(c, s, TG_SCHED_CANCELED, t, NULL)))
        return rc;
    return bill_emit(c, "customer.subscription.deleted", TG_OBJ_SUBSCRIPTION, s);
}

/* Replaces the items with the next phase's (a schedule's phase starting now, where the
 * previous period's lines end). It is the schedule's last: the schedule is released, its row
 * keeping the phases as they were. */
static int apply_next_phase(bctx *c, tg_subscription *s, int64_t t)
{
    if (s->schedule[0]) {
        int rc = schedule_end(c, s, TG_SCHED_RELEASED, t, NULL);
        if (rc)
            return rc;
    }
    tg_sub_item *items = tg_arena_alloc(c->a, s->next_phase.nitems * sizeof *items);
    if (!items)
        return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
    for (size_t i = 0; i < s->next_phase.nitems; i++) {
        tg_sub_item *it = &items[i];
        memset(it, 0, sizeof *it);
        int rc = bill_load_price(c, s->next_phase.items[i].price, NULL, &it->price);
        if (!rc)
            rc = bill_new_id(c, it->id, "si_");
        if (rc)
            return rc;
        /* The same price keeps its item (and what it has billed). */
        for (size_t k = 0; k < s->nitems; k++)
            if (strcmp(s->items[k].price.id, it->price.id) == 0) {
                tg_strlcpy(it->id, s->items[k].id, sizeof it->id);
                it->billed = s->items[k].billed;
                it->usage_from = s->items[k].usage_from;
                it->created = s->items[k].created;
                it->metadata = s->items[k].metadata;
            }
        if (!it->created) {
            it->created = t;
            it->usage_from = usage_start(c, s, &it->price, t); /* after the old lines' */
        }
        it->quantity = it->price.metered ? 0 : s->next_phase.items[i].quantity;
    }
    s->items = items;
    s->nitems = s->next_phase.nitems;
    sub_drop_schedule(s);
    return TG_OK;
}

/* The length of the natural period (between two boundaries of the anchor's cycle) that ends
 * with the period ending at `end`. A period that starts later than its natural start is a stub
 * prorated against it: a first period shortened by a future anchor (the whole period that
 * ends at the anchor; so an anchor on the next natural billing date makes a whole period at
 * the full price), or the period after a trial that ends past the anchor. */
static int64_t full_period(const tg_subscription *s, int64_t end)
{
    int64_t start, natural_end;
    tg_period_containing(s->billing_cycle_anchor, s->interval, s->interval_count, s->anchor_day,
                         end - 1, &start, &natural_end);
    return natural_end - start;
}

/* Where the licensed charge of the period [t, end) stops: at a cancel_at inside it, unless
 * it was set with proration_behavior=none. */
static int64_t licensed_end(const tg_subscription *s, int64_t t, int64_t end)
{
    return s->cancel_at > t && s->cancel_at < end && !s->cancel_no_prorate ? s->cancel_at : end;
}

/* The licensed lines of the period [t, end), billed in advance: prorated when the anchor
 * shortens it (after a trial), and then free when the subscription was created with
 * proration_behavior=none. */
static int licensed_lines(bctx *c, tg_invoice *v, const tg_subscription *s, int64_t t,
                          int64_t end)
{
    int64_t full = full_period(s, end);
    bool free_stub = s->free_stub && end - t < full;
    int64_t to = licensed_end(s, t, end);
    int rc = TG_OK;
    for (size_t i = 0; !rc && i < s->nitems; i++)
        if (!s->items[i].price.metered)
            rc = licensed_line(c, v, &s->items[i], t, to, end - full, end, free_stub);
    return rc;
}

/* A new period starts at t: bill the one that ended (metered usage, pending prorations) and
 * the one that starts (licensed items, in advance). */
static int sub_renew(bctx *c, tg_subscription *s, int64_t t, bool after_trial)
{
    int rc = finalize_drafts(c, s);
    if (rc)
        return rc;
    tg_invoice v;
    int64_t old_start = s->period_start;
    int64_t end = next_boundary(s, t);
    if ((rc = invoice_new(c, s, TG_REASON_SUBSCRIPTION_CYCLE, old_start, t, &v)))
        return rc;
    for (size_t i = 0; !rc && i < s->nitems; i++)
        if (s->items[i].price.metered && !after_trial)
            rc = ended_metered_line(c, &v, s, &s->items[i], old_start, t);
    if (!rc)
        rc = pending_lines(c, &v, s);
    if (!rc && s->next_phase.set && s->next_phase.start <= t) {
        rc = apply_next_phase(c, s, t);
        if (!rc)
            end = next_boundary(s, t);
    }
    for (size_t i = 0; !rc && i < s->nitems; i++)
        if (s->items[i].price.metered && after_trial) { /* usage counts from the trial's end */
            s->items[i].usage_from = usage_start(c, s, &s->items[i].price, paid_from(t));
            s->items[i].billed = 0;
        }
    if (!rc)
        rc = licensed_lines(c, &v, s, t, end);
    if (rc)
        return rc;
    int64_t charged = licensed_end(s, t, end);
    s->period_start = t;
    s->period_end = end;
    s->licensed_until = charged < end ? charged : 0;
    if ((rc = invoice_created(c, &v, s)) || (rc = save_invoice(c, &v)))
        return rc;
    return bill_emit(c, "customer.subscription.updated", TG_OBJ_SUBSCRIPTION, s);
}

/* The trial ends at t. */
static int sub_trial_end(bctx *c, tg_subscription *s, int64_t t)
{
    if (!customer_has_payment_method(c, s)) {
        if (s->trial_end_behavior == TG_TRIAL_END_CANCEL)
            return sub_end(c, s, t, false);
        if (s->trial_end_behavior == TG_TRIAL_END_PAUSE) {
            s->status = TG_SUB_PAUSED;
            s->paused_at = t;
            s->period_start = s->period_end = t;
            return bill_emit(c, "customer.subscription.paused", TG_OBJ_SUBSCRIPTION, s);
        }
    }
    s->status = TG_SUB_ACTIVE;
    return sub_renew(c, s, t, true);
}

/* Runs the subscription's next step if it is due by `until`; *did tells whether it did. */
static int sub_step(bctx *c, tg_subscription *s, int64_t until, bool *did)
{
    int64_t due = sub_due(s);
    *did = false;
    if (!due || due > until)
        return TG_OK;
    *did = true;
    c->now = due;
    if (s->status == TG_SUB_TRIALING && !s->trial_reminded &&
        due == s->trial_end - TG_TRIAL_REMINDER && due < s->period_end) {
        s->trial_reminded = true;
        return bill_emit(c, "customer.subscription.trial_will_end", TG_OBJ_SUBSCRIPTION, s);
    }
    if (s->cancel_at && due == s->cancel_at)
        return sub_end(c, s, due, true);
    if (s->cancel_at_period_end)
        return sub_end(c, s, due, true);
    if (s->status == TG_SUB_TRIALING)
        return sub_trial_end(c, s, due);
    return sub_renew(c, s, due, false);
}

/* Runs every step of s due by until, then saves it. Each step happens at its own due time;
 * the context's time is back at `now` afterwards. */
static int sub_advance(bctx *c, tg_subscription *s, int64_t until)
{
    bool did = true, automatic = c->automatic;
    int rc = TG_OK, steps = 0;
    int64_t now = c->now;
    c->automatic = true; /* what was due would have run by itself: no request caused it */
    for (; !rc && did && steps < 10000; steps++)
        rc = sub_step(c, s, until, &did);
    c->now = now;
    c->automatic = automatic;
    if (rc)
        return rc;
    if (steps > 1) /* a request's own change is compared with the state the steps left */
        bill_snapshot_object(c, TG_OBJ_SUBSCRIPTION, s);
    return save_sub(c, s);
}

/* Runs one due object (a subscription or a draft invoice) at its due time. */
static int run_due_object(bctx *c, const tg_obj *o, int64_t until)
{
    if (strcmp(o->kind, KIND_SUB) == 0) {
        tg_subscription s;
        if (tg_subscription_decode(o->body, o->len, c->a, &s) < 0)
            return tg_err_set(c->err, TG_ESTORE, NULL, "Corrupt subscription %s.", o->id);
        bool did;
        int rc = sub_step(c, &s, until, &did);
        return rc ? rc : save_sub(c, &s);
    }
    tg_invoice v;
    if (tg_invoice_decode(o->body, o->len, c->a, &v) < 0)
        return tg_err_set(c->err, TG_ESTORE, NULL, "Corrupt invoice %s.", o->id);
    c->now = o->due;
    tg_subscription s, *sp = NULL;
    if (v.subscription[0] && load_sub(c, v.subscription, NULL, &s) == TG_OK)
        sp = &s;
    int rc = invoice_finalize(c, &v, sp);
    if (!rc)
        rc = save_invoice(c, &v);
    if (!rc && sp)
        rc = save_sub(c, sp);
    return rc;
}

/* Runs what is due on a clock (NULL: the real one) up to until, earliest first, one object
 * step at a time so that steps of different objects interleave in time order. */
static int run_due(bctx *c, const char *clock, int64_t until, int *count)
{
    struct tg_billing *b = *tg_service_billing(c->svc);
    for (int failures = 0; failures < FAILED_MAX;) {
        tg_obj *rows;
        size_t n;
        /* Enough rows to get past every step set aside. */
        int rc = c->s->ops->obj_due(c->s, clock, until, clock ? 1 : FAILED_MAX + 1, c->a, &rows,
                                    &n, c->err);
        if (rc)
            return rc;
        size_t k = 0; /* the first object not failed recently */
        while (k < n && !clock && step_failed_recently(b, rows[k].id, until))
            k++;
        if (k == n)
            return TG_OK;
        tg_scope scope = rows[k].scope;
        const tg_scope *saved = c->scope;
        c->scope = &scope;
        /* Each object's step in its own savepoint: on the real clock a failing one is set
         * aside for a while and the others go on. A test clock's advance fails as a whole. */
        rc = c->s->ops->savepoint(c->s, c->err);
        if (!rc) {
            rc = run_due_object(c, &rows[k], until);
            if (rc)
                c->s->ops->rollback_to(c->s);
            else
                rc = c->s->ops->release(c->s, c->err);
        }
        c->scope = saved;
        if (rc && clock)
            return rc;
        if (rc) {
            tg_log(TG_LOG_ERROR, "billing: the due step of %s failed and is retried in %d s: %s",
                   rows[k].id, FAILED_RETRY, c->err->msg);
            step_failed(b, rows[k].id, until);
            c->touched_registry = true; /* what it installed was rolled back */
            tg_err_clear(c->err);
            failures++;
            continue;
        }
        (*count)++;
    }
    return TG_OK; /* more failures than can be set aside: the rest waits for the next run */
}

int bill_run_clock(bctx *c, const char *clock, int64_t until)
{
    int count = 0;
    bool automatic = c->automatic;
    c->automatic = true; /* the clock's steps, as the scheduler runs them in real time */
    int rc = run_due(c, clock, until, &count);
    c->automatic = automatic;
    return rc;
}

int bill_clock_shortest_interval(bctx *c, const char *clock, int64_t *seconds)
{
    *seconds = 0;
    tg_page page = {.limit = 100};
    tg_obj_filter f = {.clock = clock, .active = 1};
    for (;;) {
        tg_subscription *subs;
        size_t n;
        bool more;
        int rc = bill_list(c, KIND_SUB, &f, &page, bill_decode_sub, sizeof *subs,
                           (void **)&subs, &n, &more);
        if (rc)
            return rc;
        for (size_t i = 0; i < n; i++) {
            int64_t len = interval_seconds(subs[i].interval, subs[i].interval_count);
            if (!*seconds || len < *seconds)
                *seconds = len;
        }
        if (!more || !n)
            return TG_OK;
        page.starting_after = tg_arena_strdup(c->a, subs[n - 1].id);
    }
}

int bill_cancel_clock_subscriptions(bctx *c, const char *clock)
{
    tg_page page = {.limit = 100};
    tg_obj_filter f = {.clock = clock, .active = 1};
    /* They end in the clock's world, at its frozen time. */
    int rc = tg_test_clock_time(c->svc, c->s, c->scope, clock, &c->now, NULL, c->err);
    while (!rc) {
        tg_subscription *subs;
        size_t n;
        bool more;
        rc = bill_list(c, KIND_SUB, &f, &page, bill_decode_sub, sizeof *subs, (void **)&subs, &n,
                       &more);
        if (rc || !n)
            return rc;
        for (size_t i = 0; i < n; i++) {
            c->now = subs[i].period_start > c->now ? subs[i].period_start : c->now;
            if ((rc = sub_end(c, &subs[i], c->now, false)) || (rc = save_sub(c, &subs[i])))
                return rc;
        }
    }
    return rc;
}

/* ---------------------------------------------------------------- the scheduler */

typedef struct due_args {
    int64_t now;
    int count;
} due_args;

static int run_due_fn(bctx *c, void *arg)
{
    due_args *d = arg;
    return run_due(c, NULL, d->now, &d->count);
}

static int any_due_fn(bctx *c, void *arg)
{
    due_args *d = arg;
    tg_obj *rows;
    size_t n;
    int rc = c->s->ops->obj_due(c->s, NULL, d->now, 1, c->a, &rows, &n, c->err);
    d->count = rc ? 0 : (int)n;
    return rc;
}

int tg_billing_run_due(tg_service *svc, int64_t now, tg_err *err)
{
    tg_arena a;
    tg_arena_init(&a, 0);
    tg_scope none = {{0}, false};
    due_args d = {now, 0};
    /* A read first: the writer sees a job only when there is work. */
    int rc = bill_read(svc, &none, &a, any_due_fn, &d, err);
    if (!rc && d.count) {
        d.count = 0;
        rc = bill_write(svc, &none, &a, run_due_fn, &d, err);
    }
    tg_arena_free(&a);
    return rc ? rc : d.count;
}

static void *scheduler_main(void *arg)
{
    tg_service *svc = arg;
    pthread_setname_np(pthread_self(), "tg-billing");
    struct tg_billing *b = *tg_service_billing(svc);
    pthread_mutex_lock(&b->mu);
    while (!b->stop) {
        pthread_mutex_unlock(&b->mu);
        tg_err err = {0};
        int rc = tg_billing_run_due(svc, tg_service_now(svc), &err);
        if (rc < 0 && rc != TG_ESHUTDOWN)
            tg_log(TG_LOG_ERROR, "billing scheduler: %s", err.msg);
        pthread_mutex_lock(&b->mu);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        if (!b->stop)
            pthread_cond_timedwait(&b->cv, &b->mu, &until);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

int tg_billing_start(tg_service *svc, bool scheduler)
{
    struct tg_billing *b = calloc(1, sizeof *b);
    if (!b)
        return TG_ENOMEM;
    b->grace = TG_GRACE_DEFAULT;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    *tg_service_billing(svc) = b;
    if (!scheduler)
        return TG_OK;
    if (pthread_create(&b->thread, NULL, scheduler_main, svc))
        return TG_ENOMEM;
    b->started = true;
    return TG_OK;
}

void tg_billing_stop(tg_service *svc)
{
    struct tg_billing *b = *tg_service_billing(svc);
    if (!b)
        return;
    if (b->started) {
        pthread_mutex_lock(&b->mu);
        b->stop = true;
        pthread_cond_signal(&b->cv);
        pthread_mutex_unlock(&b->mu);
        pthread_join(b->thread, NULL);
    }
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b);
    *tg_service_billing(svc) = NULL;
}

/* ---------------------------------------------------------------- subscriptions */

typedef struct sub_args {
    const char *id;
    const tg_sub_params *p;
    tg_subscription *out;
    bool invoice_now;
    const tg_cancel_details *details;
    const tg_schedule_params *schedule;
    tg_sub_schedule *sched;
    tg_invoice *invoice;
} sub_args;

/* Moves c->now to the customer's world (its test clock) and fills *cu. */
static int enter_customer(bctx *c, const char *id, const char *param, tg_customer *cu)
{
    tg_err ignore = {0};
    int rc = c->s->ops->customer_get(c->s, c->scope, id, c->a, cu, &ignore);
    if (rc == TG_ENOTFOUND || (!rc && cu->deleted))
        return tg_err_set(c->err, TG_ENOTFOUND, param, "No such customer: '%s'", id);
    if (rc)
        return tg_err_set(c->err, rc, NULL, "%s", ignore.msg);
    if (cu->test_clock[0])
        return tg_test_clock_time(c->svc, c->s, c->scope, cu->test_clock, &c->now, NULL, c->err);
    return TG_OK;
}

/* Checks that price fits subscription s (currency, interval) and is usable. */
static int check_item_price(bctx *c, const tg_subscription *s, const tg_price *p,
                            const char *param)
{
    if (!p->active)
        return tg_err_set(c->err, TG_EINVAL, param, "The price %s is inactive.", p->id);
    if (!p->recurring)
        return tg_err_set(c->err, TG_EINVAL, param,
                          "The price %s is not recurring; subscriptions need recurring prices.",
                          p->id);
    if (s->currency[0] && strcmp(s->currency, p->currency) != 0)
        return tg_err_set(c->err, TG_EINVAL, param,
                          "All prices of a subscription must have the same currency (%s).",
                          s->currency);
    if (s->interval_count && (s->interval != p->interval || s->interval_count != p->interval_count))
        return tg_err_set(c->err, TG_EINVAL, param,
                          "All prices of a subscription must have the same billing interval.");
    return TG_OK;
}

/* Refuses a price already on one of items (but `except`): each price has one item, or its
 * usage would be billed once per item. */
static int price_not_on(bctx *c, const tg_sub_item *items, size_t n, const tg_sub_item *except,
                        const char *price, const char *param)
{
    for (size_t k = 0; k < n; k++)
        if (&items[k] != except && strcmp(items[k].price.id, price) == 0)
            return tg_err_set(c->err, TG_EINVAL, param,
                              "The price %s is already on this subscription.", price);
    return TG_OK;
}

/* Where the usage of a metered item starting now on s (added, or moved to another meter)
 * counts from: usage during a trial is not billed, so on a trialing subscription it counts
 * from the trial's end. */
static int64_t usage_start_now(bctx *c, const tg_subscription *s, const tg_price *p)
{
    return s->status == TG_SUB_TRIALING && s->trial_end > c->now
               ? paid_from(s->trial_end)
               : usage_start(c, s, p, c->now);
}

static int item_new(bctx *c, tg_subscription *s, const tg_sub_item_spec *spec, size_t index,
                    tg_sub_item *it)
{
    char param[48];
    memset(it, 0, sizeof *it);
    snprintf(param, sizeof param, "items[%zu][price]", index);
    int rc = bill_load_price(c, spec->price, param, &it->price);
    if (!rc)
        rc = check_item_price(c, s, &it->price, param);
    if (rc)
        return rc;
    if (!s->currency[0]) {
        tg_strlcpy(s->currency, it->price.currency, sizeof s->currency);
        s->interval = it->price.interval;
        s->interval_count = it->price.interval_count;
    }
    if ((rc = price_not_on(c, s->items, s->nitems, NULL, it->price.id, param)))
        return rc;
    if (it->price.metered && spec->has_quantity) {
        snprintf(param, sizeof param, "items[%zu][quantity]", index);
        return tg_err_set(c->err, TG_EINVAL, param,
                          "Quantity is not allowed for a metered price: usage is measured.");
    }
    it->quantity = it->price.metered ? 0 : spec->has_quantity ? spec->quantity : 1;
    it->created = c->now;
    it->usage_from = usage_start_now(c, s, &it->price);
    tg_metadata md;
    tg_metadata none = {0};
    if (tg_metadata_apply(&none, false, &spec->metadata, c->a, &md))
        return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
    it->metadata = md;
    return bill_new_id(c, it->id, "si_");
}

/* Stripe's metadata limits, on the subscription's and on each item's. */
static int sub_params_check_metadata(const tg_sub_params *p, tg_err *err)
{
    int rc = tg_metadata_validate(&p->metadata, "metadata", err);
    for (size_t i = 0; !rc && i < p->nitems; i++) {
        char param[48];
        snprintf(param, sizeof param, "items[%zu][metadata]", i);
        rc = tg_metadata_validate(&p->items[i].metadata, param, err);
    }
    return rc;
}

static int items_alloc(bctx *c, tg_subscription *s, size_t cap)
{
    tg_sub_item *items = tg_arena_alloc(c->a, (cap ? cap : 1) * sizeof *items);
    if (!items)
        return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
    if (s->nitems)
        memcpy(items, s->items, s->nitems * sizeof *items);
    s->items = items;
    return TG_OK;
}

static int sub_create_fn(bctx *c, void *arg)
{
    sub_args *sa = arg;
    const tg_sub_params *p = sa->p;
    tg_subscription *s = sa->out;
    memset(s, 0, sizeof *s);
    tg_customer cu;
    int rc = enter_customer(c, p->customer, "customer", &cu);
    if (rc)
        return rc;
    int64_t now = c->now;
    if ((rc = bill_new_id(c, s->id, "sub_")))
        return rc;
    tg_strlcpy(s->customer, cu.id, sizeof s->customer);
    tg_strlcpy(s->test_clock, cu.test_clock, sizeof s->test_clock);
    s->livemode = c->scope->livemode;
    s->created = s->start_date = now;
    if ((rc = items_alloc(c, s, p->nitems)))
        return rc;
    for (size_t i = 0; i < p->nitems; i++) {
        if ((rc = item_new(c, s, &p->items[i], i, &s->items[s->nitems])))
            return rc;
        s->nitems++;
    }
    /* Trial. */
    int64_t trial_end = 0;
    if (p->trial_end && !p->trial_end_now)
        trial_end = p->trial_end;
    else if (p->trial_period_days)
        trial_end = now + p->trial_period_days * 86400;
    else if (p->trial_from_plan && !p->trial_end_now)
        for (size_t i = 0; i < s->nitems; i++)
            if (s->items[i].price.trial_period_days)
                trial_end = now + s->items[i].price.trial_period_days * 86400;
    if (trial_end && trial_end <= now)
        return tg_err_set(c->err, TG_EINVAL, "trial_end",
                          "The trial end must be in the future (after %lld).", (long long)now);
    if (trial_end > now + TRIAL_MAX)
        return tg_err_set(c->err, TG_EINVAL, "trial_end",
                          "The trial can last at most two years.");
    s->trial_end_behavior = p->trial_end_behavior >= 0 ? (tg_trial_end)p->trial_end_behavior
                                                       : TG_TRIAL_END_CREATE_INVOICE;
    /* Billing cycle anchor. */
    int64_t start = trial_end ? trial_end : now;
    s->anchor_day = p->anchor_day > 0 ? p->anchor_day : 0;
    if (p->billing_cycle_anchor) {
        if (p->billing_cycle_anchor < now)
            return tg_err_set(c->err, TG_EINVAL, "billing_cycle_anchor",
                              "The billing cycle anchor cannot be in the past.");
        s->billing_cycle_anchor = p->billing_cycle_anchor;
    } else if (p->anchor_day > 0) {
        tg_civil at = tg_civil_from_unix(start);
        s->billing_cycle_anchor = tg_anchor_from_config(
            start - 1, p->anchor_day, p->anchor_month > 0 ? p->anchor_month : 0,
            p->anchor_hour >= 0 ? p->anchor_hour : at.hour,
            p->anchor_minute >= 0 ? p->anchor_minute : at.minute,
            p->anchor_second >= 0 ? p->anchor_second : at.second);
    } else {
        s->billing_cycle_anchor = start;
    }
    int64_t natural = tg_period_boundary(start, s->interval, s->interval_count, 0, 1);
    if (s->billing_cycle_anchor > natural)
        return tg_err_set(c->err, TG_EINVAL, "billing_cycle_anchor",
                          "The billing cycle anchor cannot be later than the next natural "
                          "billing date (%lld).", (long long)natural);
    s->anchor_month = p->anchor_month;
    s->anchor_hour = p->anchor_hour;
    s->anchor_minute = p->anchor_minute;
    s->anchor_second = p->anchor_second;
    s->cancel_at_period_end = p->cancel_at_period_end == 1;
    s->cancel_at = p->cancel_at_set ? p->cancel_at : 0;
    if (s->cancel_at && s->cancel_at <= now)
        return tg_err_set(c->err, TG_EINVAL, "cancel_at", "cancel_at must be in the future.");
    if (p->proration == TG_PRORATE_ALWAYS_INVOICE)
        return tg_err_set(c->err, TG_EINVAL, "proration_behavior",
                          "proration_behavior=always_invoice is not supported when creating a "
                          "subscription: its first invoice is made at once.");
    s->free_stub = trial_end && p->proration == TG_PRORATE_NONE;
    s->cancel_no_prorate = s->cancel_at && p->proration == TG_PRORATE_NONE;
    s->send_invoice = p->send_invoice == 1;
    s->days_until_due = p->days_until_due >= 0 ? p->days_until_due : 30;
    s->default_payment_method = p->default_payment_method.value;
    s->description = p->description.value;
    if ((rc = tg_metadata_merge(&s->metadata, false, &p->metadata, c->a, "metadata", c->err)))
        return rc;
    /* The first period. */
    s->period_start = now;
    if (trial_end) {
        s->status = TG_SUB_TRIALING;
        s->trial_start = now;
        s->trial_end = s->period_end = trial_end;
        for (size_t i = 0; i < s->nitems; i++)
            s->items[i].usage_from = paid_from(trial_end);
    } else {
        s->status = TG_SUB_ACTIVE;
        s->period_end = now < s->billing_cycle_anchor ? s->billing_cycle_anchor
                                                      : next_boundary(s, now);
    }
    if ((rc = bill_emit(c, "customer.subscription.created", TG_OBJ_SUBSCRIPTION, s)))
        return rc;
    if (trial_end && trial_end - TG_TRIAL_REMINDER <= now) {
        s->trial_reminded = true;
        if ((rc = bill_emit(c, "customer.subscription.trial_will_end", TG_OBJ_SUBSCRIPTION, s)))
            return rc;
    }
    /* The first invoice: licensed items for the first period (free during a trial), and it
     * finalizes at once. */
    tg_invoice v;
    if ((rc = invoice_new(c, s, TG_REASON_SUBSCRIPTION_CREATE, s->period_start, s->period_end,
                          &v)))
        return rc;
    int64_t full = full_period(s, s->period_end);
    bool free_first = trial_end || (p->proration == TG_PRORATE_NONE &&
                                    s->period_end - s->period_start < full);
    /* A cancel_at inside the first period ends its charge there. */
    int64_t to = licensed_end(s, s->period_start, s->period_end);
    if (!trial_end && to < s->period_end)
        s->licensed_until = to;
    for (size_t i = 0; !rc && i < s->nitems; i++)
        if (!s->items[i].price.metered)
            rc = licensed_line(c, &v, &s->items[i], s->period_start, to,
                               s->period_end - full, s->period_end, free_first);
    if (rc || (rc = invoice_created(c, &v, s)))
        return rc;
    tg_sub_status before = s->status;
    rc = invoice_finalize(c, &v, s);
    s->status = before; /* the first invoice does not make a new subscription past due */
    if (!rc)
        rc = save_invoice(c, &v);
    return rc ? rc : save_sub(c, s);
}

int tg_subscription_create(tg_service *svc, const tg_scope *scope, const tg_sub_params *p,
                           tg_arena *a, tg_subscription *out, tg_err *err)
{
    if (!p->customer)
        return tg_err_set(err, TG_EMISSING, "customer", "Missing required param: customer.");
    if (!p->nitems)
        return tg_err_set(err, TG_EMISSING, "items", "Missing required param: items.");
    for (size_t i = 0; i < p->nitems; i++)
        if (!p->items[i].price) {
            char param[48];
            snprintf(param, sizeof param, "items[%zu][price]", i);
            return tg_err_set(err, TG_EMISSING, param, "Missing required param: %s.", param);
        }
    int rc = sub_params_check_metadata(p, err);
    if (rc)
        return rc;
    sub_args sa = {.p = p, .out = out};
    return bill_write(svc, scope, a, sub_create_fn, &sa, err);
}

/* Loads a subscription for a change at the customer's time, running what is due first. */
static int sub_enter(bctx *c, const char *id, tg_subscription *s)
{
    int rc = load_sub(c, id, "id", s);
    tg_customer cu;
    if (!rc && (rc = enter_customer(c, s->customer, "customer", &cu)) == TG_ENOTFOUND) {
        tg_err_clear(c->err);
        rc = TG_OK; /* a deleted customer's subscription can still be read and canceled */
    }
    return rc;
}

/* A metered item leaves mid-period: its usage not yet billed (nor on a draft) up to `end`
 * waits for the next invoice as a pending line, at its price. */
static int bill_removed_usage(bctx *c, tg_subscription *s, const tg_sub_item *it, int64_t end,
                              const char *until)
{
    if (s->status == TG_SUB_PAUSED)
        return TG_OK; /* its usage since the pause is not billed; resuming starts afresh */
    tg_dec billed, q;
    int rc = billed_with_drafts(c, s, it, &billed);
    if (!rc)
        rc = metered_quantity(c, s, it, s->period_start, end, billed, &q, NULL);
    if (rc || q <= 0)
        return rc; /* no line: nothing takes the rest of the minute from a later item */
    if ((rc = bill_through(c, s->customer, it->price.meter, end)))
        return rc;
    tg_pending_line *p = tg_arena_alloc(c->a, (s->npending + 1) * sizeof *p);
    if (!p)
        return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
    if (s->npending)
        memcpy(p, s->pending, s->npending * sizeof *p);
    s->pending = p;
    tg_pending_line *l = &p[s->npending];
    memset(l, 0, sizeof *l);
    if ((rc = price_amount(c, &it->price, q, 1, 1, &l->amount)))
        return rc;
    tg_strlcpy(l->price, it->price.id, sizeof l->price);
    tg_strlcpy(l->item, it->id, sizeof l->item);
    l->quantity = q;
    l->period_start = s->period_start;
    l->period_end = c->now;
    char desc[400];
    snprintf(desc, sizeof desc, "Usage of %s until %s", product_name(c, it->price.product),
             until);
    if (!(l->description = tg_arena_strdup(c->a, desc)))
        return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
    s->npending++;
    return TG_OK;
}

/* A proration for item it changing from (old_price, old_qty) to (new_price, new_qty) at
 * c->now: a credit for the unused time of the old and a charge for the rest of the new. */
static int prorate_span(bctx *c, tg_subscription *s, const tg_sub_item *it, int64_t from,
                        int64_t to, const tg_price *old_price, int64_t old_qty,
                        const tg_price *new_price, int64_t new_qty)
{
    int64_t remaining = to - from, len = full_period(s, s->period_end);
    if (remaining <= 0 || len <= 0 || s->status == TG_SUB_TRIALING)
        return TG_OK;
    tg_pending_line *p = tg_arena_alloc(c->a, (s->npending + 2) * sizeof *p);
    if (!p)
        return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
    if (s->npending)
        memcpy(p, s->pending, s->npending * sizeof *p);
    s->pending = p;
    const char *name = product_name(c, it->price.product);
    for (int k = 0; k < 2; k++) {
        const tg_price *price = k ? new_price : old_price;
        int64_t qty = k ? new_qty : old_qty;
        if (!price || price->metered)
            continue;
        tg_pending_line *l = &s->pending[s->npending];
        memset(l, 0, sizeof *l);
        int rc = price_amount(c, price, tg_dec_from_int(qty), remaining, len, &l->amount);
        if (rc)
            return rc;
        if (!k)
            l->amount = -l->amount;
        tg_strlcpy(l->price, price->id, sizeof l->price);
        tg_strlcpy(l->item, it->id, sizeof l->item);
        l->proration = true;
        l->quantity = tg_dec_from_int(qty);
        l->period_start = from;
        l->period_end = to;
        char desc[400];
        snprintf(desc, sizeof desc, "%s time on %lld × %s", k ? "Remaining" : "Unused",
                 (long long)qty, name);
        if (!(l->description = tg_arena_strdup(c->a, desc)))
            return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
        s->npending++;
    }
    return TG_OK;
}

/* The end of what the current period's licensed items have been charged for. */
static int64_t charged_until(const tg_subscription *s)
{
    return s->licensed_until ? s->licensed_until : s->period_end;
}

static int prorate(bctx *c, tg_subscription *s, const tg_sub_item *it, const tg_price *old_price,
                   int64_t old_qty, const tg_price *new_price, int64_t new_qty)
{
    return prorate_span(c, s, it, c->now, charged_until(s), old_price, old_qty, new_price,
                        new_qty);
}

/* A cancel_at set, moved or cleared with prorations: the licensed items' charge for the
 * current period now ends at the cancellation (or the period's end), with a credit for the
 * time it no longer covers or a charge for the time it covers again. */
static int prorate_cancel_at(bctx *c, tg_subscription *s, bool proration)
{
    s->cancel_no_prorate = s->cancel_at && !proration;
    int64_t to = licensed_end(s, s->period_start, s->period_end), from = charged_until(s);
    if (!proration || to == from || s->status == TG_SUB_TRIALING)
        return TG_OK;
    for (size_t i = 0; i < s->nitems; i++) {
        const tg_sub_item *it = &s->items[i];
        int rc = to < from ? prorate_span(c, s, it, to, from, &it->price, it->quantity, NULL, 0)
                           : prorate_span(c, s, it, from, to, NULL, 0, &it->price, it->quantity);
        if (rc)
            return rc;
    }
    s->licensed_until = to < s->period_end ? to : 0;
    return TG_OK;
}

struct ended_item {
    tg_sub_item it; /* as it was before the change */
    const char *why;
};

/* Bills the usage of the metered items a change removed or moved to another meter. Usage on
 * each minute is billed once: an item that started counting the same meter in this minute,
 * after the removed one (by this change or an earlier one), takes the minute, and the removed
 * one ends at its start; otherwise the removed item bills its last minute (and an item
 * starting later in that minute counts from the next one: usage_start). */
static int bill_ended_items(bctx *c, tg_subscription *s, const struct ended_item *ended,
                            size_t nended)
{
    int64_t minute = tg_window_start(c->now, 60);
    for (size_t i = 0; i < nended; i++) {
        int64_t end = c->now;
        for (size_t k = 0; k < s->nitems; k++)
            if (s->items[k].price.metered && s->items[k].usage_from <= c->now &&
                s->items[k].usage_from > ended[i].it.usage_from &&
                tg_window_start(s->items[k].usage_from, 60) == minute &&
                strcmp(s->items[k].price.meter, ended[i].it.price.meter) == 0)
                end = minute;
        int rc = bill_removed_usage(c, s, &ended[i].it, end, ended[i].why);
        if (rc)
            return rc;
    }
    return TG_OK;
}

static int sub_update_items(bctx *c, tg_subscription *s, const tg_sub_params *p, bool *prorated)
{
    int rc = items_alloc(c, s, s->nitems + p->nitems);
    /* Metered items removed or moved to another meter: their usage is billed at the end. */
    struct ended_item *ended = tg_arena_alloc(c->a, (p->nitems + 1) * sizeof *ended);
    size_t nended = 0;
    if (!ended)
        return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
    bool proration = p->proration != TG_PRORATE_NONE;
    for (size_t i = 0; !rc && i < p->nitems; i++) {
        const tg_sub_item_spec *spec = &p->items[i];
        char param[48];
        if (!spec->id) {
            if (!spec->price) {
                snprintf(param, sizeof param, "items[%zu][price]", i);
                return tg_err_set(c->err, TG_EMISSING, param, "Missing required param: %s.",
                                  param);
            }
            if (s->nitems >= TG_SUB_ITEMS_MAX)
                return tg_err_set(c->err, TG_EINVAL, "items",
                                  "A subscription can have at most %d items.", TG_SUB_ITEMS_MAX);
            tg_sub_item *it = &s->items[s->nitems];
            if ((rc = item_new(c, s, spec, i, it)))
                return rc;
            s->nitems++;
            if (proration)
                rc = prorate(c, s, it, NULL, 0, &it->price, it->quantity);
            *prorated = true;
            continue;
        }
        size_t k = 0;
        while (k < s->nitems && strcmp(s->items[k].id, spec->id) != 0)
            k++;
        if (k == s->nitems) {
            snprintf(param, sizeof param, "items[%zu][id]", i);
            return tg_err_set(c->err, TG_ENOTFOUND, param, "No such subscription item: '%s'",
                              spec->id);
        }
        tg_sub_item *it = &s->items[k];
        tg_price old_price = it->price;
        int64_t old_qty = it->quantity;
        if (spec->deleted) {
            if (proration)
                rc = prorate(c, s, it, &old_price, old_qty, NULL, 0);
            if (it->price.metered)
                ended[nended].why = "removed", ended[nended++].it = *it;
            memmove(&s->items[k], &s->items[k + 1], (s->nitems - k - 1) * sizeof *it);
            s->nitems--;
            *prorated = true;
            continue;
        }
        if (spec->price && strcmp(spec->price, it->price.id) != 0) {
            snprintf(param, sizeof param, "items[%zu][price]", i);
            tg_price np;
            if ((rc = bill_load_price(c, spec->price, param, &np)) ||
                (rc = check_item_price(c, s, &np, param)) ||
                (rc = price_not_on(c, s->items, s->nitems, it, np.id, param)))
                return rc;
            if (np.metered != old_price.metered)
                return tg_err_set(c->err, TG_EINVAL, param,
                                  "An item cannot change between a licensed and a metered "
                                  "price; add a new item instead.");
            /* Another meter: what the old one counted so far is billed like a removed item's
             * usage, and the item counts the new meter's usage from now on (from the trial's
             * end during a trial). */
            if (np.metered && strcmp(np.meter, old_price.meter) != 0) {
                ended[nended].why = "changed", ended[nended++].it = *it;
                it->usage_from = usage_start_now(c, s, &np);
                it->billed = 0;
            }
            it->price = np;
        }
        if (spec->has_quantity) {
            if (it->price.metered) {
                snprintf(param, sizeof param, "items[%zu][quantity]", i);
                return tg_err_set(c->err, TG_EINVAL, param,
                                  "Quantity is not allowed for a metered price.");
            }
            it->quantity = spec->quantity;
        }
        snprintf(param, sizeof param, "items[%zu][metadata]", i);
        if ((rc = tg_metadata_merge(&it->metadata, spec->metadata_clear, &spec->metadata, c->a,
                                    param, c->err)))
            return rc;
        if (old_qty != it->quantity || strcmp(old_price.id, it->price.id) != 0) {
            *prorated = true;
            if (proration)
                rc = prorate(c, s, it, &old_price, old_qty, &it->price, it->quantity);
        }
    }
    if (!rc && !s->nitems)
        return tg_err_set(c->err, TG_EINVAL, "items",
                          "A subscription must keep at least one item; cancel it instead.");
    return rc ? rc : bill_ended_items(c, s, ended, nended);
}

static int sub_update_fn(bctx *c, void *arg)
{
    sub_args *sa = arg;
    const tg_sub_params *p = sa->p;
    tg_subscription *s = sa->out;
    int rc = sub_enter(c, sa->id, s);
    if (!rc && (rc = sub_advance(c, s, c->now)))
        return rc;
    if (rc)
        return rc;
    if (!sub_live(s) && (p->has_items || p->cancel_at_period_end >= 0 || p->cancel_at_set ||
                         p->trial_end || p->trial_end_now))
        return tg_err_set(c->err, TG_ESTATE, NULL,
                          "A canceled subscription can only update its metadata.");
    int64_t old_cancel_at = s->cancel_at;
    bool old_at_period_end = s->cancel_at_period_end;
    if (p->cancel_at_period_end >= 0 && p->cancel_at_period_end != s->cancel_at_period_end) {
        s->cancel_at_period_end = p->cancel_at_period_end;
        if (s->cancel_at_period_end)
            s->cancel_at = 0;
        s->canceled_at = s->cancel_at_period_end ? c->now : 0;
    }
    if (p->cancel_at_set) {
        if (p->cancel_at && p->cancel_at <= c->now)
            return tg_err_set(c->err, TG_EINVAL, "cancel_at", "cancel_at must be in the future.");
        s->cancel_at = p->cancel_at;
        if (s->cancel_at)
            s->cancel_at_period_end = false;
    }
    bool prorated = false;
    /* Only a change of the cancellation moves its proration: sending the same values again
     * keeps the one made when it was set (or its absence, with proration_behavior=none). */
    if (s->cancel_at != old_cancel_at || s->cancel_at_period_end != old_at_period_end) {
        size_t before = s->npending;
        if ((rc = prorate_cancel_at(c, s, p->proration != TG_PRORATE_NONE)))
            return rc;
        prorated = s->npending > before;
    }
    if (p->trial_end || p->trial_end_now) {
        if (s->status != TG_SUB_TRIALING)
            return tg_err_set(c->err, TG_ESTATE, "trial_end",
                              "Only a trialing subscription can change its trial end.");
        int64_t t = p->trial_end_now ? c->now : p->trial_end;
        if (t < c->now)
            return tg_err_set(c->err, TG_EINVAL, "trial_end", "The trial end must be in the future.");
        if (t > s->start_date + TRIAL_MAX)
            return tg_err_set(c->err, TG_EINVAL, "trial_end",
                              "The trial can last at most two years.");
        /* An anchor that came from the trial's end follows it, earlier or later. */
        if (!s->anchor_day && s->billing_cycle_anchor == s->trial_end)
            s->billing_cycle_anchor = t;
        s->trial_end = s->period_end = t;
        /* The reminder comes 3 days before the new end, or now when that is already past. */
        if (t - TG_TRIAL_REMINDER > c->now) {
            s->trial_reminded = false;
        } else if (!s->trial_reminded) {
            s->trial_reminded = true;
            if ((rc = bill_emit(c, "customer.subscription.trial_will_end", TG_OBJ_SUBSCRIPTION,
                                s)))
                return rc;
        }
        for (size_t i = 0; i < s->nitems; i++)
            s->items[i].usage_from = paid_from(t);
    }
    if (p->send_invoice >= 0)
        s->send_invoice = p->send_invoice;
    if (p->days_until_due >= 0)
        s->days_until_due = p->days_until_due;
    if (p->default_payment_method.set)
        s->default_payment_method = p->default_payment_method.value;
    if (p->description.set)
        s->description = p->description.value;
    if ((rc = tg_metadata_merge(&s->metadata, p->metadata_clear, &p->metadata, c->a, "metadata",
                                c->err)))
        return rc;
    if (p->has_items && (rc = sub_update_items(c, s, p, &prorated)))
        return rc;
    if ((rc = bill_emit(c, "customer.subscription.updated", TG_OBJ_SUBSCRIPTION, s)))
        return rc;
    if (prorated && p->proration == TG_PRORATE_ALWAYS_INVOICE && s->npending) {
        tg_invoice v;
        if ((rc = invoice_new(c, s, TG_REASON_SUBSCRIPTION_UPDATE, c->now, s->period_end, &v)) ||
            (rc = pending_lines(c, &v, s)) || (rc = invoice_created(c, &v, s)) ||
            (rc = invoice_finalize(c, &v, s)) || (rc = save_invoice(c, &v)))
            return rc;
    }
    /* A trial ended "now" runs at once. */
    if ((rc = sub_advance(c, s, c->now)))
        return rc;
    return TG_OK;
}

int tg_subscription_update(tg_service *svc, const tg_scope *scope, const char *id,
                           const tg_sub_params *p, tg_arena *a, tg_subscription *out,
                           tg_err *err)
{
    int rc = sub_params_check_metadata(p, err);
    if (rc)
        return rc;
    sub_args sa = {.id = id, .p = p, .out = out};
    return bill_write(svc, scope, a, sub_update_fn, &sa, err);
}

/* Item prices are copies: a read shows the catalog's current price fields. */
static void refresh_prices(bctx *c, tg_subscription *s)
{
    tg_err ignore = {0}, *saved = c->err;
    c->err = &ignore;
    for (size_t i = 0; i < s->nitems; i++) {
        tg_price p;
        if (bill_load_price(c, s->items[i].price.id, NULL, &p) == TG_OK)
            s->items[i].price = p;
    }
    c->err = saved;
}

static int sub_get_fn(bctx *c, void *arg)
{
    sub_args *sa = arg;
    int rc = load_sub(c, sa->id, "id", sa->out);
    if (!rc)
        refresh_prices(c, sa->out);
    return rc;
}

int tg_subscription_retrieve(tg_service *svc, const tg_scope *scope, const char *id,
                             tg_arena *a, tg_subscription *out, tg_err *err)
{
    sub_args sa = {.id = id, .out = out};
    return bill_read(svc, scope, a, sub_get_fn, &sa, err);
}

typedef struct item_owner_args {
    const char *item;
    char *owner;
} item_owner_args;

static bool sub_has_item(const tg_subscription *s, const char *item)
{
    for (size_t i = 0; i < s->nitems; i++)
        if (strcmp(s->items[i].id, item) == 0)
            return true;
    return false;
}

/* The subscription an item is on, by the item's tag. A subscription last saved before items
 * were tagged has no item tag at all: when the tag finds nothing, those (and only those) are
 * read, a page at a time; there are none left once each has been saved again. */
static int item_owner_fn(bctx *c, void *arg)
{
    item_owner_args *o = arg;
    char tag[TG_ID_MAX + 16];
    const char *tags[1] = {tag};
    snprintf(tag, sizeof tag, " item=%s ", o->item);
    tg_obj_filter f = {.active = -1, .tags = tags, .ntags = 1};
    tg_page page = {.limit = 1};
    tg_subscription *subs;
    size_t n;
    bool more = true;
    int rc = bill_list(c, KIND_SUB, &f, &page, bill_decode_sub, sizeof *subs, (void **)&subs, &n,
                       &more);
    if (!rc && n && sub_has_item(&subs[0], o->item)) {
        tg_strlcpy(o->owner, subs[0].id, TG_ID_MAX);
        return TG_OK;
    }
    tg_obj_filter all = {.active = -1, .without_tag = " item="};
    page.limit = 100;
    for (more = true; !rc && more; page.starting_after = subs[n - 1].id) {
        if ((rc = bill_list(c, KIND_SUB, &all, &page, bill_decode_sub, sizeof *subs, (void **)&subs,
                            &n, &more)))
            break;
        for (size_t i = 0; i < n; i++)
            if (sub_has_item(&subs[i], o->item)) {
                tg_strlcpy(o->owner, subs[i].id, TG_ID_MAX);
                return TG_OK;
            }
        if (!n)
            break;
    }
    return rc ? rc : tg_err_set(c->err, TG_ENOTFOUND, "id", "No such subscription item: '%s'",
                                o->item);
}

int tg_subscription_item_owner(tg_service *svc, const tg_scope *scope, const char *item,
                               tg_arena *a, char owner[TG_ID_MAX], tg_err *err)
{
    item_owner_args o = {item, owner};
    return bill_read(svc, scope, a, item_owner_fn, &o, err);
}

typedef struct sub_list_args {
    const tg_sub_filter *f;
    const tg_page *page;
    tg_subscription **out;
    size_t *n;
    bool *has_more;
} sub_list_args;

static int sub_list_fn(bctx *c, void *arg)
{
    sub_list_args *l = arg;
    tg_obj_filter f = {.customer = l->f->customer, .clock = l->f->test_clock, .active = -1,
                       .created = l->f->created};
    const char *status = NULL;
    if (l->f->status == -1)
        f.active = 1;
    else if (l->f->status >= 0) {
        status = tg_sub_status_words[l->f->status];
        f.lookup_any = &status;
        f.nlookup = 1;
    }
    char tag[TG_ID_MAX + 16];
    const char *tags[1];
    f.tags = tags;
    if (l->f->price) {
        snprintf(tag, sizeof tag, " price=%s ", l->f->price);
        tags[f.ntags++] = tag;
    }
    int rc = bill_list(c, KIND_SUB, &f, l->page, bill_decode_sub, sizeof **l->out, (void **)l->out,
                       l->n, l->has_more);
    for (size_t i = 0; !rc && i < *l->n; i++)
        refresh_prices(c, &(*l->out)[i]);
    return rc;
}

int tg_subscription_list(tg_service *svc, const tg_scope *scope, const tg_sub_filter *f,
                         const tg_page *page, tg_arena *a, tg_subscription **out, size_t *n,
                         bool *has_more, tg_err *err)
{
    sub_list_args l = {f, page, out, n, has_more};
    return bill_read(svc, scope, a, sub_list_fn, &l, err);
}

static int sub_cancel_fn(bctx *c, void *arg)
{
    sub_args *sa = arg;
    tg_subscription *s = sa->out;
    int rc = sub_enter(c, sa->id, s);
    if (rc || (rc = c->s->ops->savepoint(c->s, c->err)))
        return rc;
    /* Catch up first; if a step it owes cannot run (it is broken), cancel it anyway. */
    int64_t now = c->now;
    if (sub_advance(c, s, now)) {
        c->s->ops->rollback_to(c->s);
        tg_log(TG_LOG_WARN, "billing: canceling %s without its due steps: %s", sa->id,
               c->err->msg);
        tg_err_clear(c->err);
        c->touched_registry = true;
        if ((rc = sub_enter(c, sa->id, s)))
            return rc;
        c->now = now;
    } else if ((rc = c->s->ops->release(c->s, c->err))) {
        return rc;
    }
    if (!sub_live(s))
        return tg_err_set(c->err, TG_ESTATE, NULL, "The subscription %s is canceled.", s->id);
    s->canceled_at = c->now;
    s->cancellation_reason = sa->details->reason;
    s->cancellation_comment = sa->details->comment;
    s->cancellation_feedback = sa->details->feedback;
    if ((rc = sub_end(c, s, c->now, sa->invoice_now)))
        return rc;
    return save_sub(c, s);
}

int tg_subscription_cancel(tg_service *svc, const tg_scope *scope, const char *id,
                           bool invoice_now, const tg_cancel_details *details, tg_arena *a,
                           tg_subscription *out, tg_err *err)
{
    sub_args sa = {.id = id, .out = out, .invoice_now = invoice_now,
                   .details = details};
    return bill_write(svc, scope, a, sub_cancel_fn, &sa, err);
}

/* A deleted customer's live subscriptions are canceled as DELETE /v1/subscriptions/{id}
 * cancels each, at the customer's time; one that its due steps end first is already
 * canceled. */
static int cancel_customer_subscriptions(bctx *c, const tg_customer *cu)
{
    tg_cancel_details none = {0};
    tg_page page = {.limit = 100};
    tg_obj_filter f = {.customer = cu->id, .active = 1};
    int rc = TG_OK;
    while (!rc) {
        tg_subscription *subs, out;
        size_t n;
        bool more;
        rc = bill_list(c, KIND_SUB, &f, &page, bill_decode_sub, sizeof *subs, (void **)&subs, &n,
                       &more);
        if (rc || !n)
            break;
        for (size_t i = 0; !rc && i < n; i++) {
            sub_args sa = {.id = subs[i].id, .out = &out, .details = &none};
            c->now = tg_service_now(c->svc);
            if ((rc = sub_cancel_fn(c, &sa)) == TG_ESTATE && !sub_live(&out)) {
                tg_err_clear(c->err);
                rc = TG_OK;
            }
        }
    }
    return rc;
}

int tg_billing_customer_event(tg_service *svc, tg_store *s, const tg_scope *scope,
                              const char *type, const tg_customer *cu, tg_arena *a,
                              bool *queued, tg_err *err)
{
    bctx c = {.svc = svc, .s = s, .scope = scope, .a = a, .err = err};
    bool deleted = strcmp(type, "customer.deleted") == 0;
    int rc = deleted ? cancel_customer_subscriptions(&c, cu) : TG_OK;
    if (c.touched_registry)
        tg_ent_registry_clear(*tg_service_entitlements(svc));
    if (!rc) {
        /* At the time of the customer's world; a new one's is its creation. */
        c.now = strcmp(type, "customer.created") == 0 ? cu->created
                                                       : tg_customer_now(svc, scope, cu->id);
        tg_customer shown = *cu; /* a deletion's event shows the customer as it was */
        shown.deleted = false;
        rc = bill_emit(&c, type, TG_OBJ_CUSTOMER, &shown);
    }
    *queued = c.queued_webhooks;
    return rc;
}

static int sub_resume_fn(bctx *c, void *arg)
{
    sub_args *sa = arg;
    tg_subscription *s = sa->out;
    int rc = sub_enter(c, sa->id, s);
    if (!rc)
        rc = sub_advance(c, s, c->now); /* a cancel_at that has come ends it first */
    if (rc)
        return rc;
    if (s->status != TG_SUB_PAUSED)
        return tg_err_set(c->err, TG_ESTATE, NULL, "Only a paused subscription can be resumed.");
    /* A new cycle starts now; usage sent while paused is not billed. */
    s->billing_cycle_anchor = c->now;
    s->anchor_day = 0;
    s->status = TG_SUB_ACTIVE;
    s->paused_at = 0;
    s->period_start = s->period_end = c->now;
    for (size_t i = 0; i < s->nitems; i++) {
        s->items[i].usage_from = usage_start(c, s, &s->items[i].price, paid_from(c->now));
        s->items[i].billed = 0;
    }
    if ((rc = bill_emit(c, "customer.subscription.resumed", TG_OBJ_SUBSCRIPTION, s)))
        return rc;
    if ((rc = sub_renew(c, s, c->now, true)))
        return rc;
    return save_sub(c, s);
}

int tg_subscription_resume(tg_service *svc, const tg_scope *scope, const char *id, tg_arena *a,
                           tg_subscription *out, tg_err *err)
{
    sub_args sa = {.id = id, .out = out};
    return bill_write(svc, scope, a, sub_resume_fn, &sa, err);
}

/* Whether phases[0][items] are exactly the subscription's items (each price once, with its
 * quantity when licensed). */
static bool phase_is_current(const tg_subscription *s, const tg_phase_checks *k)
{
    if (k->ncurrent != s->nitems)
        return false;
    for (size_t i = 0; i < k->ncurrent; i++) {
        size_t j = 0;
        while (j < s->nitems && strcmp(s->items[j].price.id, k->current[i].price) != 0)
            j++;
        if (j == s->nitems ||
            (!s->items[j].price.metered && s->items[j].quantity != k->current[i].quantity))
            return false;
        for (size_t e = 0; e < i; e++)
            if (strcmp(k->current[e].price, k->current[i].price) == 0)
                return false;
    }
    return true;
}

/* Refuses phase dates and current items other than Tollgate's one schedule shape. */
static int check_phases(bctx *c, const tg_subscription *s, const tg_phase_checks *k)
{
    const char *param = NULL;
    int64_t want = 0;
    if (k->start_date[0] && k->start_date[0] != s->period_start)
        param = "phases[0][start_date]", want = s->period_start;
    else if (k->end_date[0] && k->end_date[0] != s->period_end)
        param = "phases[0][end_date]", want = s->period_end;
    else if (k->start_date[1] && k->start_date[1] != s->period_end)
        param = "phases[1][start_date]", want = s->period_end;
    if (param)
        return tg_err_set(c->err, TG_EINVAL, param,
                          "Tollgate schedules change phase at the current period's end: %s "
                          "must be %lld.", param, (long long)want);
    if (k->end_date[1])
        return tg_err_set(c->err, TG_EINVAL, "phases[1][end_date]",
                          "Tollgate schedules are released when the next phase starts: "
                          "phases[1][end_date] is not supported.");
    if (k->ncurrent && !phase_is_current(s, k))
        return tg_err_set(c->err, TG_EINVAL, "phases[0][items]",
                          "phases[0][items] must be the subscription's current items and "
                          "quantities; changes take effect in phases[1].");
    return TG_OK;
}

/* Refuses op on schedule k, which has ended: nothing about it can change any more. */
static int schedule_refused(bctx *c, const tg_sub_schedule *k, tg_schedule_op op)
{
    static const char *const verbs[] = {"create", "update", "release", "cancel"};
    return tg_err_set(c->err, TG_ESTATE, NULL,
                      "You cannot %s a subscription schedule that is currently in the `%s` "
                      "status.",
                      verbs[op], sched_status_words[k->status]);
}

/* POST .../cancel: cancels the subscription of active schedule k at once (caught up by the
 * caller: nothing is due), as DELETE /v1/subscriptions/{id} does (sub_end cancels the
 * schedule with it); *k is then the canceled schedule. */
static int schedule_cancel(bctx *c, sub_args *sa, tg_sub_schedule *k)
{
    tg_cancel_details none = {0};
    char id[TG_ID_MAX];
    tg_strlcpy(id, k->id, sizeof id);
    sub_args ca = {.id = k->subscription, .out = sa->out,
                   .invoice_now = sa->schedule->invoice_now, .details = &none};
    int rc = sub_cancel_fn(c, &ca);
    return rc ? rc : load_schedule(c, id, k);
}

static int sub_schedule_fn(bctx *c, void *arg)
{
    sub_args *sa = arg;
    const tg_schedule_params *p = sa->schedule;
    tg_sub_schedule *k = sa->sched;
    tg_subscription *s = sa->out;
    char sub_id[TG_ID_MAX];
    int rc;
    tg_strlcpy(sub_id, sa->id, sizeof sub_id);
    if (p->op != TG_SCHEDULE_CREATE) { /* sa->id is the schedule's */
        if ((rc = load_schedule(c, sa->id, k)))
            return rc;
        if (k->ended)
            return schedule_refused(c, k, p->op);
        tg_strlcpy(sub_id, k->subscription, sizeof sub_id);
    }
    rc = sub_enter(c, sub_id, s);
    if (!rc)
        rc = sub_advance(c, s, c->now);
    if (rc)
        return rc;
    if (p->op != TG_SCHEDULE_CREATE && (strcmp(s->schedule, k->id) != 0 || !sub_live(s))) {
        /* Catching up ended it (its last phase started, a cancel_at came): refused as an
         * ended schedule, and the catch-up with it (the scheduler runs it again). */
        if (!(rc = load_schedule(c, sa->id, k)))
            rc = k->ended ? schedule_refused(c, k, p->op)
                          : tg_err_set(c->err, TG_ESTATE, NULL, "The subscription %s is canceled.",
                                       s->id);
        return rc;
    }
    if (p->op == TG_SCHEDULE_CANCEL)
        return schedule_cancel(c, sa, k);
    if (!sub_live(s))
        return tg_err_set(c->err, TG_ESTATE, NULL, "The subscription %s is canceled.", s->id);
    if (p->op == TG_SCHEDULE_CREATE && s->schedule[0])
        return tg_err_set(c->err, TG_ESTATE, "from_subscription",
                          "The subscription %s is already attached to the schedule %s.", s->id,
                          s->schedule);
    if (p->op == TG_SCHEDULE_CREATE) { /* a schedule exists from its creation, phases or not */
        sub_drop_schedule(s); /* nothing of an earlier one's plan (metadata) carries over */
        memset(k, 0, sizeof *k);
        if ((rc = bill_new_id(c, k->id, "sub_sched_")))
            return rc;
        tg_strlcpy(s->schedule, k->id, sizeof s->schedule);
        tg_strlcpy(k->subscription, s->id, sizeof k->subscription);
        k->created = c->now;
    }
    if (p->op == TG_SCHEDULE_RELEASE) {
        if ((rc = schedule_end(c, s, TG_SCHED_RELEASED, c->now, k)))
            return rc;
        sub_drop_schedule(s);
    }
    if (p->phases_set && (rc = check_phases(c, s, &p->checks)))
        return rc;
    if (p->phases_set && p->phase.set && !p->phase.nitems)
        return tg_err_set(c->err, TG_EINVAL, "phases[1][items]",
                          "A phase needs at least one item; cancel the subscription instead.");
    if (p->phases_set && p->phase.set) {
        tg_subscription probe = *s; /* same currency and interval as now */
        tg_sub_item *seen = tg_arena_alloc(c->a, (p->phase.nitems + 1) * sizeof *seen);
        if (!seen)
            return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
        for (size_t i = 0; i < p->phase.nitems; i++) {
            char param[48];
            snprintf(param, sizeof param, "phases[1][items][%zu][price]", i);
            if ((rc = bill_load_price(c, p->phase.items[i].price, param, &seen[i].price)) ||
                (rc = check_item_price(c, &probe, &seen[i].price, param)) ||
                (rc = price_not_on(c, seen, i, NULL, seen[i].price.id, param)))
                return rc;
        }
        s->next_phase = p->phase;
        s->next_phase.start = s->period_end;
    } else if (p->phases_set) {
        s->next_phase.set = false;
        s->next_phase.nitems = 0;
    }
    if (p->op != TG_SCHEDULE_RELEASE &&
        (rc = tg_metadata_merge(&s->schedule_metadata, p->metadata_clear, &p->metadata, c->a,
                                "metadata", c->err)))
        return rc;
    if ((rc = bill_emit(c, "customer.subscription.updated", TG_OBJ_SUBSCRIPTION, s)) ||
        (rc = save_sub(c, s)))
        return rc;
    if (p->op == TG_SCHEDULE_RELEASE)
        return TG_OK; /* *k is the released schedule */
    k->sub = *s;
    return p->op == TG_SCHEDULE_CREATE ? save_schedule(c, k) : TG_OK;
}

int tg_subscription_schedule(tg_service *svc, const tg_scope *scope, const char *id,
                             const tg_schedule_params *p, tg_arena *a, tg_sub_schedule *out,
                             tg_err *err)
{
    int rc = tg_metadata_validate(&p->metadata, "metadata", err);
    if (rc)
        return rc;
    tg_subscription *s = tg_arena_alloc(a, sizeof *s);
    if (!s)
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    sub_args sa = {.id = id, .out = s, .schedule = p, .sched = out};
    return bill_write(svc, scope, a, sub_schedule_fn, &sa, err);
}

/* An active schedule is shown with its subscription as it is now. */
static int schedule_with_sub(bctx *c, tg_sub_schedule *k)
{
    if (k->ended)
        return TG_OK;
    int rc = load_sub(c, k->subscription, NULL, &k->sub);
    if (!rc)
        refresh_prices(c, &k->sub);
    return rc;
}

typedef struct sched_get_args {
    const char *id;
    tg_sub_schedule *out;
} sched_get_args;

static int sched_get_fn(bctx *c, void *arg)
{
    sched_get_args *g = arg;
    int rc = load_schedule(c, g->id, g->out);
    return rc ? rc : schedule_with_sub(c, g->out);
}

int tg_schedule_retrieve(tg_service *svc, const tg_scope *scope, const char *id, tg_arena *a,
                         tg_sub_schedule *out, tg_err *err)
{
    sched_get_args g = {id, out};
    return bill_read(svc, scope, a, sched_get_fn, &g, err);
}

typedef struct sched_list_args {
    const tg_schedule_filter *f;
    const tg_page *page;
    tg_sub_schedule **out;
    size_t *n;
    bool *has_more;
} sched_list_args;

static int sched_list_fn(bctx *c, void *arg)
{
    sched_list_args *l = arg;
    const tg_schedule_filter *sf = l->f;
    tg_obj_filter f = {.customer = sf->customer, .active = -1, .created = sf->created};
    /* released_at, canceled_at and completed_at are ranges of the lookup column (see
     * save_schedule). A schedule ends once, so two of them match nothing; none completes
     * (they end released) and none waits to start (scheduled). */
    const tg_time_range *ended[] = {&sf->released_at, &sf->canceled_at, &sf->completed_at};
    static const char *const words[] = {"released", "canceled", "completed"};
    char lo[48], hi[48];
    int nended = 0;
    for (int i = 0; i < 3; i++)
        if (ended[i]->set) {
            nended++;
            snprintf(lo, sizeof lo, "%s:%012lld", words[i], (long long)ended[i]->min);
            snprintf(hi, sizeof hi, "%s:%012lld", words[i], (long long)ended[i]->max);
            f.lookup_min = lo;
            f.lookup_max = hi;
        }
    if (nended > 1 || sf->scheduled) {
        *l->n = 0;
        *l->has_more = false;
        return TG_OK;
    }
    int rc = bill_list(c, KIND_SCHEDULE, &f, l->page, decode_schedule, sizeof **l->out,
                       (void **)l->out, l->n, l->has_more);
    for (size_t i = 0; !rc && i < *l->n; i++)
        rc = schedule_with_sub(c, &(*l->out)[i]);
    return rc;
}

int tg_schedule_list(tg_service *svc, const tg_scope *scope, const tg_schedule_filter *f,
                     const tg_page *page, tg_arena *a, tg_sub_schedule **out, size_t *n,
                     bool *has_more, tg_err *err)
{
    sched_list_args l = {f, page, out, n, has_more};
    return bill_read(svc, scope, a, sched_list_fn, &l, err);
}

/* Data directories written before schedules had rows of their own keep each schedule only in
 * its subscription (released ones were dropped). At every start-up, before anything runs,
 * each subscription naming a schedule that has no row gets one, as those versions showed it
 * (schedule_from_sub): also after an older binary ran on the directory in between. The
 * subscriptions are read a page at a time into a scratch arena, so a large directory costs
 * a page of memory; the ids of the few that need a row are kept, and their rows made oldest
 * first (the list shows schedules in the order their rows were made), each from the
 * subscription read again. */
typedef char sub_id[TG_ID_MAX];

static int schedule_rows_fn(bctx *c, void *arg)
{
    const char *account = arg;
    const tg_scope *saved_scope = c->scope;
    tg_arena *saved_arena = c->a;
    tg_arena scratch;
    tg_arena_init(&scratch, 0);
    int rc = TG_OK;
    for (int live = 0; !rc && live < 2; live++) {
        tg_scope scope = {.livemode = live};
        tg_strlcpy(scope.account, account, sizeof scope.account);
        c->scope = &scope;
        tg_obj_filter f = {.active = -1};
        tg_page page = {.limit = 100};
        sub_id after;
        sub_id *ids = NULL; /* newest first, as listed */
        size_t nids = 0, cap = 0;
        for (bool more = true; !rc && more;) {
            tg_subscription *subs;
            size_t n = 0;
            tg_arena_reset(&scratch);
            c->a = &scratch;
            rc = bill_list(c, KIND_SUB, &f, &page, bill_decode_sub, sizeof *subs,
                           (void **)&subs, &n, &more);
            if (rc || !n)
                break;
            for (size_t i = 0; !rc && i < n; i++) {
                tg_sub_schedule k;
                if (!subs[i].schedule[0] ||
                    (rc = load_schedule(c, subs[i].schedule, &k)) != TG_ENOTFOUND)
                    continue;
                tg_err_clear(c->err);
                rc = TG_OK;
                c->a = saved_arena;
                if (!(ids = bill_arena_room(c, ids, nids, &cap, sizeof *ids)))
                    rc = tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
                else
                    tg_strlcpy(ids[nids++], subs[i].id, sizeof *ids);
                c->a = &scratch;
            }
            tg_strlcpy(after, subs[n - 1].id, sizeof after);
            page.starting_after = after;
        }
        c->a = saved_arena;
        for (size_t i = nids; !rc && i-- > 0;) {
            tg_subscription s;
            tg_sub_schedule k;
            if (!(rc = load_sub(c, ids[i], "id", &s))) {
                schedule_from_sub(&s, &k);
                rc = save_schedule(c, &k);
            }
        }
    }
    c->a = saved_arena;
    c->scope = saved_scope;
    tg_arena_free(&scratch);
    return rc;
}

int tg_billing_schedule_rows(tg_service *svc, const char *account, tg_err *err)
{
    tg_arena a;
    tg_arena_init(&a, 0);
    tg_scope none = {{0}, false};
    int rc = bill_write(svc, &none, &a, schedule_rows_fn, (void *)account, err);
    tg_arena_free(&a);
    return rc;
}

/* ---------------------------------------------------------------- invoices */

typedef struct inv_args {
    const char *id;
    tg_inv_action act;
    bool paid_out_of_band;
    int auto_advance;
    tg_invoice *out;
} inv_args;

int tg_invoice_retrieve(tg_service *svc, const tg_scope *scope, const char *id, tg_arena *a,
                        tg_invoice *out, tg_err *err)
{
    return bill_retrieve(svc, scope, KIND_INVOICE, id, bill_decode_invoice, a, out, err);
}

typedef struct inv_list_args {
    tg_obj_filter f;
    const tg_page *page;
    tg_invoice **out;
    size_t *n;
    bool *has_more;
} inv_list_args;

static int invoice_list_fn(bctx *c, void *arg)
{
    inv_list_args *l = arg;
    return bill_list(c, KIND_INVOICE, &l->f, l->page, bill_decode_invoice, sizeof **l->out,
                     (void **)l->out, l->n, l->has_more);
}

int tg_invoice_list(tg_service *svc, const tg_scope *scope, const tg_invoice_filter *f,
                    const tg_page *page, tg_arena *a, tg_invoice **out, size_t *n,
                    bool *has_more, tg_err *err)
{
    inv_list_args l = {{.customer = f->customer, .parent = f->subscription, .active = -1,
                        .created = f->created},
                       page, out, n, has_more};
    if (f->status >= 0) {
        l.f.lookup_any = &tg_inv_status_words[f->status];
        l.f.nlookup = 1;
    }
    return bill_read(svc, scope, a, invoice_list_fn, &l, err);
}

static int invoice_act_fn(bctx *c, void *arg)
{
    inv_args *ia = arg;
    tg_invoice *v = ia->out;
    int rc = load_invoice(c, ia->id, "id", v);
    tg_customer cu;
    if (!rc && (rc = enter_customer(c, v->customer, "customer", &cu)) == TG_ENOTFOUND) {
        tg_err_clear(c->err);
        rc = TG_OK;
    }
    if (rc)
        return rc;
    tg_subscription s, *sp = NULL;
    if (v->subscription[0] && load_sub(c, v->subscription, NULL, &s) == TG_OK)
        sp = &s;
    switch (ia->act) {
    case TG_INV_FINALIZE:
        if (v->status != TG_INV_DRAFT)
            return tg_err_set(c->err, TG_ESTATE, NULL, "This invoice is already finalized (%s).",
                              tg_inv_status_words[v->status]);
        rc = invoice_finalize(c, v, sp);
        if (!rc && ia->auto_advance >= 0 && v->status == TG_INV_OPEN)
            v->auto_advance = ia->auto_advance;
        break;
    case TG_INV_PAY:
        if (!ia->paid_out_of_band)
            return tg_err_set(c->err, TG_EINVAL, "paid_out_of_band",
                              "Tollgate collects no payments: record a payment made elsewhere "
                              "with paid_out_of_band=true.");
        if (v->status == TG_INV_DRAFT) {
            if ((rc = invoice_finalize(c, v, sp)))
                return rc;
            if (v->status == TG_INV_PAID) { /* nothing was due: finalizing paid it */
                v->paid_out_of_band = true;
                break;
            }
        }
        if (v->status == TG_INV_PAID)
            return tg_err_set(c->err, TG_ESTATE, NULL, "This invoice is already paid.");
        if (v->status != TG_INV_OPEN && v->status != TG_INV_UNCOLLECTIBLE)
            return tg_err_set(c->err, TG_ESTATE, NULL, "A %s invoice cannot be paid.",
                              tg_inv_status_words[v->status]);
        v->paid_out_of_band = true;
        rc = invoice_mark_paid(c, v);
        if (!rc && sp && sp->status == TG_SUB_PAST_DUE)
            rc = sub_set_status(c, sp, TG_SUB_ACTIVE);
        break;
    case TG_INV_VOID_IT:
        if (v->status != TG_INV_OPEN && v->status != TG_INV_UNCOLLECTIBLE)
            return tg_err_set(c->err, TG_ESTATE, NULL, "A %s invoice cannot be voided.",
                              tg_inv_status_words[v->status]);
        v->status = TG_INV_VOID;
        v->voided_at = c->now;
        v->amount_remaining = 0;
        rc = bill_emit(c, "invoice.voided", TG_OBJ_INVOICE, v);
        break;
    case TG_INV_UNCOLLECT:
        if (v->status != TG_INV_OPEN)
            return tg_err_set(c->err, TG_ESTATE, NULL,
                              "A %s invoice cannot be marked uncollectible.",
                              tg_inv_status_words[v->status]);
        v->status = TG_INV_UNCOLLECTIBLE;
        v->marked_uncollectible_at = c->now;
        rc = bill_emit(c, "invoice.marked_uncollectible", TG_OBJ_INVOICE, v);
        break;
    }
    if (!rc)
        rc = save_invoice(c, v);
    if (!rc && sp)
        rc = save_sub(c, sp);
    return rc;
}

int tg_invoice_act(tg_service *svc, const tg_scope *scope, const char *id, tg_inv_action act,
                   bool paid_out_of_band, int auto_advance, tg_arena *a, tg_invoice *out,
                   tg_err *err)
{
    inv_args ia = {id, act, paid_out_of_band, auto_advance, out};
    return bill_write(svc, scope, a, invoice_act_fn, &ia, err);
}

/* The invoice the subscription's period end will create, with the usage so far. Nothing is
 * saved or recorded. */
static int invoice_preview_fn(bctx *c, void *arg)
{
    sub_args *sa = arg;
    tg_subscription s;
    tg_invoice *v = sa->invoice;
    int rc = load_sub(c, sa->id, "subscription", &s);
    tg_customer cu;
    if (!rc)
        rc = enter_customer(c, s.customer, "customer", &cu);
    if (rc)
        return rc;
    if (!sub_live(&s) || s.status == TG_SUB_PAUSED)
        return tg_err_set(c->err, TG_ESTATE, "subscription",
                          "The subscription %s has no upcoming invoice (%s).", s.id,
                          s.status == TG_SUB_PAUSED ? "paused" : "canceled");
    refresh_prices(c, &s);
    /* A cancellation at the period's end or inside it makes the next invoice the final one:
     * usage and pending lines up to the cancellation, no new period. */
    bool ending = s.cancel_at_period_end || (s.cancel_at && s.cancel_at <= s.period_end);
    int64_t t = s.cancel_at && s.cancel_at < s.period_end ? s.cancel_at : s.period_end;
    bool after_trial = s.status == TG_SUB_TRIALING;
    if ((rc = invoice_new(c, &s, TG_REASON_UPCOMING, s.period_start, t, v)))
        return rc;
    memcpy(v->id, "upcoming_", 9);
    if ((rc = bill_new_id(c, v->id + 9, "in_")))
        return rc;
    v->automatically_finalizes_at = t + grace_of(c->svc);
    for (size_t i = 0; !rc && i < s.nitems; i++)
        if (s.items[i].price.metered && !after_trial) {
            /* What drafts in their grace period will bill is not this invoice's. */
            rc = billed_with_drafts(c, &s, &s.items[i], &s.items[i].billed);
            if (!rc)
                rc = metered_line(c, v, &s, &s.items[i], s.period_start, t);
        }
    if (!rc)
        rc = pending_lines(c, v, &s);
    if (!rc && s.next_phase.set && !ending)
        rc = apply_next_phase(c, &s, t);
    if (!rc && !ending)
        rc = licensed_lines(c, v, &s, t, next_boundary(&s, t));
    if (rc)
        return rc;
    for (size_t i = 0; i < v->nlines; i++)
        memcpy(v->lines[i].id, "il_tmp_", 7);
    return invoice_totals(c, v);
}

int tg_invoice_preview(tg_service *svc, const tg_scope *scope, const char *subscription,
                       tg_arena *a, tg_invoice *out, tg_err *err)
{
    if (!subscription)
        return tg_err_set(err, TG_EMISSING, "subscription",
                          "Missing required param: subscription.");
    sub_args sa = {.id = subscription, .invoice = out};
    return bill_read(svc, scope, a, invoice_preview_fn, &sa, err);
}
