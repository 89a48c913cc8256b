/* billing_records.c -- billing objects to and from their stored records (core/record.h).
 *
 * Each object is described once, by a table of its fields: the tag, the kind of member and
 * where it lies in the struct. One encoder and one decoder walk any table, so a field added to
 * an object is one line, and its encoding and decoding cannot disagree. Encoding writes the
 * fields in table order; decoding starts from a zeroed object (so a field missing from an
 * older row reads as its zero value), finds each stored tag in the table and skips tags it
 * does not know. Nested objects (tiers, subscription items with their price copy, pending
 * lines, invoice lines, limits) are records inside a bytes field, described by tables of their
 * own. Tags are part of the storage format: never renumber one, add new ones.
 *
 * Integer members of any width are written as int64 and read back into their own width; the
 * member's type picks the width at compile time (_Generic), so a member of a type the table
 * cannot hold does not compile. A field can depend on a bool of its object (`flag`): it is
 * written only when the bool is true, and reading it sets the bool (a tier's optional amounts,
 * a product feature's limit, a subscription's next phase, an ended schedule's final state).
 */
#include "core/billing_records.h"

#include <stddef.h>
#include <string.h>

#include "core/metadata.h"
#include "core/record.h"
#include "core/webhooks.h"

typedef enum {
    K_BOOL, K_INT, K_UNSIGNED, K_INT64, /* integers, by the member's type */
    K_DEC,                       /* tg_dec */
    K_ID,                        /* char[size], not written when empty */
    K_CHARS,                     /* char[size], written even when empty */
    K_STR,                       /* const char * in the arena, not written when NULL */
    K_META,                      /* tg_metadata, not written when empty */
    K_RECORD,                    /* a nested object (sub) */
    K_LIST,                      /* an arena array of sub, its size_t count at `count` */
    K_ARRAY,                     /* a fixed array of sub, its size_t count at `count` */
    K_OLD_INT_DEC,               /* read only: an older integer form of a tg_dec member */
} field_kind;

typedef struct schema schema;

typedef struct field {
    unsigned tag;
    field_kind kind;
    size_t off, size;  /* the member */
    size_t flag;       /* offset + 1 of the bool the field depends on; 0: none */
    size_t count;      /* K_LIST, K_ARRAY: offset of the element count */
    const schema *sub; /* K_RECORD, K_LIST, K_ARRAY */
} field;

struct schema {
    const field *fields;
    size_t n, size;
};

#define SCHEMA(fields, type) {fields, sizeof fields / sizeof *fields, sizeof(type)}

/* The field macros describe members of the struct named T, defined before each table. */
#define AT(m) .off = offsetof(T, m), .size = sizeof(((T *)0)->m)
#define WHEN(m) .flag = offsetof(T, m) + 1
#define INT_KIND(m) \
    _Generic(((T *)0)->m, bool: K_BOOL, int: K_INT, unsigned: K_UNSIGNED, int64_t: K_INT64)
#define INT(t, m) {.tag = (t), .kind = INT_KIND(m), AT(m)}
#define INT_WHEN(t, m, f) {.tag = (t), .kind = INT_KIND(m), AT(m), WHEN(f)}
#define DEC(t, m) {.tag = (t), .kind = K_DEC, AT(m)}
#define DEC_WHEN(t, m, f) {.tag = (t), .kind = K_DEC, AT(m), WHEN(f)}
#define ID(t, m) {.tag = (t), .kind = K_ID, AT(m)}
#define CHARS(t, m) {.tag = (t), .kind = K_CHARS, AT(m)}
#define STR(t, m) {.tag = (t), .kind = K_STR, AT(m)}
#define META(t, m) {.tag = (t), .kind = K_META, AT(m)}
#define RECORD(t, m, s) {.tag = (t), .kind = K_RECORD, AT(m), .sub = &(s)}
#define RECORD_WHEN(t, m, s, f) {.tag = (t), .kind = K_RECORD, AT(m), .sub = &(s), WHEN(f)}
#define LIST(t, m, n, s) {.tag = (t), .kind = K_LIST, AT(m), .count = offsetof(T, n), .sub = &(s)}
#define ARRAY_WHEN(t, m, n, s, f) \
    {.tag = (t), .kind = K_ARRAY, AT(m), .count = offsetof(T, n), .sub = &(s), WHEN(f)}
#define OLD_INT_DEC(t, m) {.tag = (t), .kind = K_OLD_INT_DEC, AT(m)}

/* ---------------------------------------------------------------- the tables */

#define T tg_product
static const field product_fields[] = {
    ID(1, id), INT(2, created), INT(3, updated), INT(4, livemode), INT(5, active),
    INT(6, deleted), STR(7, name), STR(8, description), META(9, metadata),
};
#undef T
static const schema product_schema = SCHEMA(product_fields, tg_product);

#define T tg_tier
static const field tier_fields[] = {
    INT(1, up_to_inf), INT(2, up_to), DEC_WHEN(3, unit_amount, has_unit),
    DEC_WHEN(4, flat_amount, has_flat),
};
#undef T
static const schema tier_schema = SCHEMA(tier_fields, tg_tier);

#define T tg_price
static const field price_fields[] = {
    ID(1, id), ID(2, product), ID(3, currency), INT(4, created), INT(5, livemode),
    INT(6, active), INT(7, recurring), INT(8, interval), INT(9, interval_count),
    INT(10, metered), ID(11, meter), INT(12, trial_period_days), INT(13, unit_amount_set),
    INT(14, pricing.scheme), DEC(15, pricing.unit_amount), INT(16, pricing.tiers_mode),
    LIST(17, pricing.tiers, pricing.ntiers, tier_schema), INT(18, pricing.divide_by),
    INT(19, pricing.round_up), STR(20, lookup_key), STR(21, nickname), META(22, metadata),
};
#undef T
static const schema price_schema = SCHEMA(price_fields, tg_price);

#define T tg_test_clock
static const field test_clock_fields[] = {
    ID(1, id), INT(2, created), INT(3, frozen_time), INT(4, deletes_after), STR(5, name),
    INT(6, status), INT(7, deleted),
};
#undef T
static const schema test_clock_schema = SCHEMA(test_clock_fields, tg_test_clock);

#define T tg_sub_item
static const field item_fields[] = {
    ID(1, id), INT(2, created), RECORD(3, price, price_schema), INT(4, quantity),
    META(5, metadata), INT(6, usage_from), DEC(7, billed),
};
#undef T
static const schema item_schema = SCHEMA(item_fields, tg_sub_item);

#define T tg_pending_line
static const field pending_fields[] = {
    ID(1, price), ID(2, item), INT(3, amount),
    DEC(8, quantity), OLD_INT_DEC(4, quantity), /* tag 4: whole quantities, before usage lines */
    INT(9, proration), INT(5, period_start), INT(6, period_end), STR(7, description),
};
#undef T
static const schema pending_schema = SCHEMA(pending_fields, tg_pending_line);

#define T tg_phase_item
static const field phase_item_fields[] = {CHARS(1, price), INT(2, quantity)};
#undef T
static const schema phase_item_schema = SCHEMA(phase_item_fields, tg_phase_item);

#define T tg_subscription
static const field subscription_fields[] = {
    ID(1, id), ID(2, customer), ID(3, currency), ID(4, test_clock), ID(5, latest_invoice),
    ID(6, schedule), INT(7, created), INT(8, start_date), INT(9, livemode), INT(10, status),
    INT(11, interval), INT(12, interval_count), INT(13, billing_cycle_anchor),
    INT(14, anchor_day), INT(15, anchor_month), INT(16, anchor_hour), INT(17, anchor_minute),
    INT(18, anchor_second), INT(19, period_start), INT(20, period_end), INT(21, trial_start),
    INT(22, trial_end), INT(23, trial_end_behavior), INT(24, trial_reminded),
    INT(25, cancel_at_period_end), INT(26, cancel_at), INT(27, canceled_at), INT(28, ended_at),
    INT(29, paused_at), INT(30, invoice_now_on_cancel), STR(31, cancellation_reason),
    STR(32, default_payment_method), STR(33, description), INT(34, send_invoice),
    INT(35, days_until_due), LIST(36, items, nitems, item_schema),
    LIST(37, pending, npending, pending_schema),
    INT_WHEN(38, next_phase.start, next_phase.set),
    ARRAY_WHEN(39, next_phase.items, next_phase.nitems, phase_item_schema, next_phase.set),
    META(40, metadata), INT(41, free_stub), STR(42, cancellation_comment),
    STR(43, cancellation_feedback), INT(44, cancel_no_prorate), INT(45, licensed_until),
    META(46, schedule_metadata),
};
#undef T
static const schema subscription_schema = SCHEMA(subscription_fields, tg_subscription);

/* A schedule's row: its subscription's final state only once it has ended (an active one's
 * plan is in its subscription). */
#define T tg_sub_schedule
static const field schedule_fields[] = {
    ID(1, id), ID(2, subscription), INT(3, created), INT(4, status), INT(5, released_at),
    INT(6, canceled_at), RECORD_WHEN(7, sub, subscription_schema, ended),
};
#undef T
static const schema schedule_schema = SCHEMA(schedule_fields, tg_sub_schedule);

#define T tg_invoice_line
static const field line_fields[] = {
    ID(1, id), ID(2, price), ID(3, product), ID(4, subscription_item), STR(5, description),
    INT(6, amount), DEC(7, quantity), INT(8, unit_amount_set), DEC(9, unit_amount),
    INT(10, period_start), INT(11, period_end), INT(12, proration), INT(13, metered),
    DEC(14, usage_before), INT(15, usage_from),
};
#undef T
static const schema line_schema = SCHEMA(line_fields, tg_invoice_line);

#define T tg_invoice
static const field invoice_fields[] = {
    ID(1, id), ID(2, customer), ID(3, subscription), ID(4, currency), ID(5, test_clock),
    ID(6, number), INT(7, livemode), INT(8, status), INT(9, billing_reason), INT(10, created),
    INT(11, period_start), INT(12, period_end), INT(13, automatically_finalizes_at),
    INT(14, finalized_at), INT(15, paid_at), INT(16, voided_at),
    INT(17, marked_uncollectible_at), INT(18, auto_advance), INT(19, paid_out_of_band),
    INT(20, send_invoice), INT(21, due_date), INT(22, subtotal), INT(23, total),
    INT(24, amount_due), INT(25, amount_paid), INT(26, amount_remaining),
    LIST(27, lines, nlines, line_schema), META(28, metadata), STR(29, customer_email),
    STR(30, customer_name), META(31, customer_contact),
};
#undef T
static const schema invoice_schema = SCHEMA(invoice_fields, tg_invoice);

#define T tg_feature
static const field feature_fields[] = {
    ID(1, id), INT(2, created), INT(3, livemode), INT(4, active), STR(5, name),
    ID(6, lookup_key), META(7, metadata),
};
#undef T
static const schema feature_schema = SCHEMA(feature_fields, tg_feature);

/* A customer as an event shows it (customers themselves are rows of their own table). */
#define T tg_customer
static const field customer_fields[] = {
    ID(1, id), INT(2, created), INT(3, livemode), INT(4, deleted), STR(5, email),
    STR(6, name), STR(7, description), STR(8, default_payment_method), ID(9, test_clock),
    META(10, metadata), META(11, contact),
};
#undef T
static const schema customer_schema = SCHEMA(customer_fields, tg_customer);

/* A meter as an event shows it (meters are rows of their own table too). */
#define T tg_meter
static const field meter_fields[] = {
    ID(1, id), INT(2, created), INT(3, updated), INT(4, livemode), INT(5, active),
    INT(6, deactivated_at), INT(7, formula), INT(8, event_time_window), CHARS(9, display_name),
    CHARS(10, event_name), CHARS(11, customer_key), CHARS(12, value_key),
};
#undef T
static const schema meter_schema = SCHEMA(meter_fields, tg_meter);

#define T tg_webhook_endpoint
static const field webhook_endpoint_fields[] = {
    ID(1, id), INT(2, created), INT(3, livemode), INT(4, disabled), STR(5, url),
    STR(6, description), STR(7, enabled_events), ID(8, secret), META(9, metadata),
    STR(10, api_version),
};
#undef T
static const schema webhook_endpoint_schema = SCHEMA(webhook_endpoint_fields,
                                                     tg_webhook_endpoint);

#define T tg_usage_limit
static const field limit_fields[] = {CHARS(1, meter), DEC(2, quantity), INT(3, hard)};
#undef T
static const schema limit_schema = SCHEMA(limit_fields, tg_usage_limit);

#define T tg_product_feature
static const field product_feature_fields[] = {
    ID(1, id), ID(2, product), INT(3, created), INT(4, livemode), ID(5, feature.id),
    RECORD_WHEN(6, limit, limit_schema, limit.set),
};
#undef T
static const schema product_feature_schema = SCHEMA(product_feature_fields, tg_product_feature);

#define T tg_grant
static const field grant_fields[] = {
    ID(1, feature), ID(2, lookup_key), RECORD_WHEN(3, limit, limit_schema, limit.set),
    INT(4, period_start), INT(5, period_end), INT(7, start_minute), /* 6: retired */
};
#undef T
static const schema grant_schema = SCHEMA(grant_fields, tg_grant);

#define T tg_active_entitlement
static const field active_entitlement_fields[] = {
    CHARS(1, id), CHARS(2, feature), CHARS(3, lookup_key), INT(4, livemode),
};
#undef T
static const schema active_entitlement_schema =
    SCHEMA(active_entitlement_fields, tg_active_entitlement);

#define T tg_entitlement_summary
static const field ent_summary_fields[] = {
    ID(1, customer), LIST(2, items, n, active_entitlement_schema),
};
#undef T
static const schema ent_summary_schema = SCHEMA(ent_summary_fields, tg_entitlement_summary);

#define T tg_usage_session
static const field usage_session_fields[] = {
    ID(1, id), ID(2, customer), ID(3, feature), ID(4, event_name), META(5, payload),
    INT(6, minute_up), INT(7, heartbeat_timeout), INT(8, livemode), INT(9, limited),
    INT(10, status), INT(11, created), INT(12, last_heartbeat), INT(13, ended_at),
    INT(14, recorded), INT(15, reserved), INT(16, seq), INT(17, pending),
};
#undef T
static const schema usage_session_schema = SCHEMA(usage_session_fields, tg_usage_session);

/* An event's object, by its kind (the members of tg_billing_event's union). */
static const schema *const event_object_schema[] = {
    [TG_OBJ_PRODUCT] = &product_schema,
    [TG_OBJ_PRICE] = &price_schema,
    [TG_OBJ_TEST_CLOCK] = &test_clock_schema,
    [TG_OBJ_SUBSCRIPTION] = &subscription_schema,
    [TG_OBJ_INVOICE] = &invoice_schema,
    [TG_OBJ_ENTITLEMENT_SUMMARY] = &ent_summary_schema,
    [TG_OBJ_FEATURE] = &feature_schema,
    [TG_OBJ_CUSTOMER] = &customer_schema,
    [TG_OBJ_METER] = &meter_schema,
};

/* ---------------------------------------------------------------- encoding */

static void encode(tg_buf *b, const schema *s, const void *obj);

/* Encodes obj as a record inside field tag of b. */
static void put_nested(tg_buf *b, unsigned tag, const schema *s, const void *obj)
{
    tg_buf inner;
    tg_buf_init(&inner, TG_RECORD_MAX);
    encode(&inner, s, obj);
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

/* Pointer members are read and written with memcpy: their types (const char *, const tg_tier
 * *, ...) differ from the void * the walker handles them as. */
static const void *ptr_at(const char *p)
{
    const void *v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void encode(tg_buf *b, const schema *s, const void *obj)
{
    const char *o = obj;
    for (size_t i = 0; i < s->n; i++) {
        const field *f = &s->fields[i];
        const char *m = o + f->off;
        if (f->flag && !*(const bool *)(o + f->flag - 1))
            continue;
        switch (f->kind) {
        case K_BOOL: tg_rec_int(b, f->tag, *(const bool *)m); break;
        case K_INT: tg_rec_int(b, f->tag, *(const int *)m); break;
        case K_UNSIGNED: tg_rec_int(b, f->tag, *(const unsigned *)m); break;
        case K_INT64: tg_rec_int(b, f->tag, *(const int64_t *)m); break;
        case K_DEC: tg_rec_dec(b, f->tag, *(const tg_dec *)m); break;
        case K_ID: tg_rec_str(b, f->tag, m[0] ? m : NULL); break;
        case K_CHARS: tg_rec_str(b, f->tag, m); break;
        case K_STR: tg_rec_str(b, f->tag, ptr_at(m)); break;
        case K_META: put_metadata(b, f->tag, (const tg_metadata *)m); break;
        case K_RECORD: put_nested(b, f->tag, f->sub, m); break;
        case K_LIST:
        case K_ARRAY: {
            const char *items = f->kind == K_LIST ? ptr_at(m) : m;
            size_t n = *(const size_t *)(o + f->count);
            for (size_t k = 0; k < n; k++)
                put_nested(b, f->tag, f->sub, items + k * f->sub->size);
            break;
        }
        case K_OLD_INT_DEC: break;
        }
    }
}

/* ---------------------------------------------------------------- decoding */

static int decode(const schema *s, const void *data, size_t len, tg_arena *a, void *obj);

/* The field of s with this tag, looked for from *next on: stored fields come in table order,
 * so the search usually ends at once. */
static const field *field_of(const schema *s, unsigned tag, size_t *next)
{
    for (size_t k = 0; k < s->n; k++) {
        size_t i = (*next + k) % s->n;
        if (s->fields[i].tag == tag) {
            *next = i + 1;
            return &s->fields[i];
        }
    }
    return NULL;
}

/* Appends room for one element to an arena array that grows by doubling. */
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

/* Reads field value f into member m of object o as d describes it. */
static int decode_field(const field *d, const tg_rec_field *f, tg_arena *a, char *o)
{
    char *m = o + d->off;
    switch (d->kind) {
    case K_BOOL: *(bool *)m = f->i != 0; break;
    case K_INT: *(int *)m = (int)f->i; break;
    case K_UNSIGNED: *(unsigned *)m = (unsigned)f->i; break;
    case K_INT64: *(int64_t *)m = f->i; break;
    case K_DEC: *(tg_dec *)m = f->d; break;
    case K_ID:
    case K_CHARS: tg_rec_copy(f, m, d->size); break;
    case K_STR: {
        char *str = tg_rec_strdup(f, a);
        memcpy(m, &str, sizeof str);
        break;
    }
    case K_META: return tg_metadata_decode(f->data, f->len, a, (tg_metadata *)m) ? -1 : 0;
    case K_RECORD: return decode(d->sub, f->data, f->len, a, m);
    case K_LIST:
    case K_ARRAY: {
        size_t *n = (size_t *)(o + d->count);
        char *items = m;
        if (d->kind == K_LIST) {
            if (!(items = grow(a, (void *)ptr_at(m), *n, d->sub->size)))
                return -1;
            memcpy(m, &items, sizeof items);
        } else if (*n >= d->size / d->sub->size) {
            return -1;
        }
        return decode(d->sub, f->data, f->len, a, items + (*n)++ * d->sub->size);
    }
    case K_OLD_INT_DEC: *(tg_dec *)m = tg_dec_from_int(f->i); break;
    }
    return 0;
}

static int decode(const schema *s, const void *data, size_t len, tg_arena *a, void *obj)
{
    char *o = obj;
    memset(o, 0, s->size);
    tg_rec_reader r;
    tg_rec_field f;
    int rc;
    size_t next = 0;
    tg_rec_open(&r, data, len);
    while ((rc = tg_rec_next(&r, &f)) == 1) {
        const field *d = field_of(s, f.tag, &next);
        if (!d)
            continue;
        if (decode_field(d, &f, a, o) < 0)
            return -1;
        if (d->flag)
            *(bool *)(o + d->flag - 1) = true;
    }
    return rc;
}

/* ---------------------------------------------------------------- the objects */

void tg_product_encode(tg_buf *b, const tg_product *p) { encode(b, &product_schema, p); }
int tg_product_decode(const void *data, size_t len, tg_arena *a, tg_product *p)
{
    return decode(&product_schema, data, len, a, p);
}

void tg_price_encode(tg_buf *b, const tg_price *p) { encode(b, &price_schema, p); }
int tg_price_decode(const void *data, size_t len, tg_arena *a, tg_price *p)
{
    return decode(&price_schema, data, len, a, p);
}

void tg_test_clock_encode(tg_buf *b, const tg_test_clock *c) { encode(b, &test_clock_schema, c); }
int tg_test_clock_decode(const void *data, size_t len, tg_arena *a, tg_test_clock *c)
{
    return decode(&test_clock_schema, data, len, a, c);
}

void tg_subscription_encode(tg_buf *b, const tg_subscription *s)
{
    encode(b, &subscription_schema, s);
}
int tg_subscription_decode(const void *data, size_t len, tg_arena *a, tg_subscription *s)
{
    return decode(&subscription_schema, data, len, a, s);
}

void tg_sub_schedule_encode(tg_buf *b, const tg_sub_schedule *k)
{
    encode(b, &schedule_schema, k);
}
int tg_sub_schedule_decode(const void *data, size_t len, tg_arena *a, tg_sub_schedule *k)
{
    return decode(&schedule_schema, data, len, a, k);
}

void tg_invoice_encode(tg_buf *b, const tg_invoice *v) { encode(b, &invoice_schema, v); }
int tg_invoice_decode(const void *data, size_t len, tg_arena *a, tg_invoice *v)
{
    return decode(&invoice_schema, data, len, a, v);
}

void tg_feature_encode(tg_buf *b, const tg_feature *f) { encode(b, &feature_schema, f); }
int tg_feature_decode(const void *data, size_t len, tg_arena *a, tg_feature *f)
{
    return decode(&feature_schema, data, len, a, f);
}

bool tg_customer_same(const tg_customer *x, const tg_customer *y)
{
    tg_buf bx, by;
    tg_buf_init(&bx, TG_RECORD_MAX);
    tg_buf_init(&by, TG_RECORD_MAX);
    encode(&bx, &customer_schema, x);
    encode(&by, &customer_schema, y);
    bool same = !bx.failed && !by.failed && bx.len == by.len &&
                (bx.len == 0 || memcmp(bx.data, by.data, bx.len) == 0);
    tg_buf_free(&bx);
    tg_buf_free(&by);
    return same;
}

void tg_webhook_endpoint_encode(tg_buf *b, const tg_webhook_endpoint *w)
{
    encode(b, &webhook_endpoint_schema, w);
}
int tg_webhook_endpoint_decode(const void *data, size_t len, tg_arena *a, tg_webhook_endpoint *w)
{
    return decode(&webhook_endpoint_schema, data, len, a, w);
}

void tg_product_feature_encode(tg_buf *b, const tg_product_feature *p)
{
    encode(b, &product_feature_schema, p);
}
int tg_product_feature_decode(const void *data, size_t len, tg_arena *a, tg_product_feature *p)
{
    return decode(&product_feature_schema, data, len, a, p);
}

void tg_ent_summary_encode(tg_buf *b, const tg_entitlement_summary *s)
{
    encode(b, &ent_summary_schema, s);
}
int tg_ent_summary_decode(const void *data, size_t len, tg_arena *a, tg_entitlement_summary *s)
{
    return decode(&ent_summary_schema, data, len, a, s);
}

void tg_usage_session_encode(tg_buf *b, const tg_usage_session *u)
{
    encode(b, &usage_session_schema, u);
}
int tg_usage_session_decode(const void *data, size_t len, tg_arena *a, tg_usage_session *u)
{
    return decode(&usage_session_schema, data, len, a, u);
}

/* A customer's grants: a record of grant records, each in field 1. */
void tg_grants_encode(tg_buf *b, const tg_grant *g, size_t n)
{
    for (size_t i = 0; i < n; i++)
        put_nested(b, 1, &grant_schema, &g[i]);
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
        if ((rc = decode(&grant_schema, f.data, f.len, a, &(*out)[(*n)++])) < 0)
            break;
    }
    return rc;
}

/* An event: its fields, then its object's record in field 6 and the previous one's in 9,
 * read as its kind (field 5, written before them) says. */
void tg_billing_event_encode(tg_buf *b, const tg_billing_event *e)
{
    tg_rec_str(b, 1, e->id[0] ? e->id : NULL);
    tg_rec_str(b, 2, e->type);
    tg_rec_int(b, 3, e->created);
    tg_rec_int(b, 4, e->livemode);
    tg_rec_int(b, 5, e->kind);
    put_nested(b, 6, event_object_schema[e->kind], &e->object);
    tg_rec_str(b, 7, e->request_id);
    tg_rec_str(b, 8, e->idempotency_key);
    if (e->has_previous)
        put_nested(b, 9, event_object_schema[e->kind], &e->previous);
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
        case 5:
            if (f.i < 0 || (size_t)f.i >= sizeof event_object_schema / sizeof *event_object_schema)
                return -1;
            e->kind = (tg_obj_kind)f.i;
            break;
        case 6:
            if (decode(event_object_schema[e->kind], f.data, f.len, a, &e->object) < 0)
                return -1;
            break;
        case 7: e->request_id = tg_rec_strdup(&f, a); break;
        case 8: e->idempotency_key = tg_rec_strdup(&f, a); break;
        case 9:
            if (decode(event_object_schema[e->kind], f.data, f.len, a, &e->previous) < 0)
                return -1;
            e->has_previous = true;
            break;
        }
    }
    return rc;
}
