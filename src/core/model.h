/* model.h -- the objects of the metering domain, as plain structs.
 *
 * Strings inside objects read from a store point into the caller's arena; fixed-size fields
 * hold what has a documented maximum (ids, meter names). Every object belongs to a scope: an
 * account and a mode (test or live), and nothing crosses scopes.
 */
#ifndef TG_MODEL_H
#define TG_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/ids.h"
#include "core/decimal.h"

#define TG_NAME_MAX 100         /* event_name, identifier, payload keys (Stripe's maxLength) */
#define TG_DISPLAY_NAME_MAX 250
#define TG_METADATA_KEYS_MAX 50
#define TG_METADATA_KEY_MAX 40
#define TG_METADATA_VALUE_MAX 500
#define TG_EVENT_PAST_WINDOW (35 * 86400) /* events may be 35 days old */
#define TG_EVENT_FUTURE_SLACK 300         /* and 5 minutes ahead (clock drift) */
#define TG_CANCEL_WINDOW 86400            /* adjustments reach events received in 24 h */
/* Identifiers are kept this long after receipt by default: past the event's own window (35
 * days, 5 minutes ahead), so a retry carrying the event's timestamp is refused either way. */
#define TG_IDENTIFIER_DAYS 36
/* A meter event's value has at most 15 significant digits, as at Stripe (2026-04-22,
 * meter_event_value_too_many_digits). It also keeps every value under 10^15, so a minute's
 * sum cannot overflow (that would take 10^11 events in one minute). */
#define TG_EVENT_VALUE_DIGITS 15
#define TG_LIST_MAX 100
#define TG_TIME_NOW INT64_MIN /* an event timestamp not given: the customer's current time */

typedef struct tg_scope {
    char account[40];
    bool livemode;
} tg_scope;

typedef struct tg_kv {
    const char *key;
    const char *value; /* NULL in a patch means "remove this key" */
} tg_kv;

/* A list's `created` filter: min <= created <= max when set (empty when min > max). */
typedef struct tg_time_range {
    bool set;
    int64_t min, max;
} tg_time_range;

/* Filters of GET /v1/customers. test_clock NULL: customers on no test clock (Stripe's
 * default), else that clock's; email NULL: any, else exactly that email (case-sensitive).
 * A NULL filter is all fields NULL. */
typedef struct tg_customer_filter {
    const char *test_clock, *email;
    bool any_clock; /* customers on any test clock or none (else test_clock's, or none's) */
    tg_time_range created;
} tg_customer_filter;

typedef struct tg_metadata {
    tg_kv *items;
    size_t n;
} tg_metadata;

/* An optional string in an update: set=false leaves the field alone, set with value NULL
 * clears it. */
typedef struct tg_opt_str {
    bool set;
    const char *value;
} tg_opt_str;

typedef struct tg_page {
    int limit;                  /* 1..100 */
    const char *starting_after; /* NULL when absent */
    const char *ending_before;
    int64_t before_seq; /* > 0 (without an id cursor): only rows older than this row number */
} tg_page;

/* ---- customers ---- */

typedef struct tg_customer {
    char id[TG_ID_MAX];
    int64_t seq; /* the store's row number: events refer to customers by it */
    int64_t created;
    bool livemode, deleted;
    const char *email, *name, *description; /* NULL = null */
    const char *default_payment_method;     /* invoice_settings[default_payment_method] */
    char test_clock[TG_ID_MAX];             /* "" = none; set at creation only */
    tg_metadata metadata;
    /* phone, address and shipping, as a map: "phone", "address.<field>", "shipping.name",
     * "shipping.phone", "shipping.address.<field>" (fields: TG_ADDRESS_FIELDS). */
    tg_metadata contact;
} tg_customer;

#define TG_ADDRESS_FIELDS {"city", "country", "line1", "line2", "postal_code", "state"}

typedef struct tg_customer_patch {
    tg_opt_str email, name, description, default_payment_method;
    const char *test_clock; /* create only */
    bool metadata_clear; /* drop every key first */
    tg_metadata metadata; /* keys to set (value) or remove (NULL) */
    tg_metadata contact;  /* contact keys to set (value) or remove (NULL) */
} tg_customer_patch;

/* ---- meters ---- */

typedef enum { TG_FORMULA_SUM, TG_FORMULA_COUNT, TG_FORMULA_LAST } tg_formula;
typedef enum { TG_WINDOW_NONE, TG_WINDOW_HOUR, TG_WINDOW_DAY } tg_window;

typedef struct tg_meter {
    char id[TG_ID_MAX];
    int64_t seq; /* the store's row number */
    int64_t created, updated;
    bool livemode, active;
    int64_t deactivated_at; /* 0 = null */
    tg_formula formula;
    tg_window event_time_window;
    char display_name[TG_DISPLAY_NAME_MAX + 1];
    char event_name[TG_NAME_MAX + 1];
    char customer_key[TG_NAME_MAX + 1];
    char value_key[TG_NAME_MAX + 1];
} tg_meter;

/* ---- meter events ---- */

typedef enum { TG_EVENT_COUNTED = 0, TG_EVENT_CANCELED = 1, TG_EVENT_SUPERSEDED = 2 } tg_event_state;

typedef struct tg_event {
    char identifier[TG_NAME_MAX + 1];
    char event_name[TG_NAME_MAX + 1];
    char meter_id[TG_ID_MAX];
    char customer_id[TG_ID_MAX];
    int64_t timestamp; /* event time */
    int64_t created;   /* receive time */
    tg_dec value;
    tg_metadata payload; /* every payload key, as received */
    /* Filled by validation: */
    int64_t meter_seq, customer_seq;
    tg_window window;    /* the meter's event_time_window */
    bool additive;       /* sum or count without a window: stored in blocks, see writer.c */
    tg_metadata extras;  /* payload keys the meter does not interpret */
    /* The identifier's index hash under the scope it was prepared for (tg_event_prepare
     * computes it on the request's thread, so the writer, the serial part, need not); an
     * identifier changed afterwards must be prepared again. */
    uint64_t id_hash;
    const tg_scope *id_hash_scope;
    /* The customer's registry hash, when tg_event_prefetch computed it (0: not yet). */
    uint64_t customer_hash;
    /* Filled by the store on insert / read (row-stored events): */
    int64_t seq;         /* receive order, unique per store */
    tg_event_state state;
} tg_event;

/* The pre-aggregate of one (meter, customer, minute): enough to answer sum, count and last
 * without reading raw events. last_* describe the event with the greatest (timestamp, seq). */
typedef struct tg_bucket {
    int64_t minute; /* start of the minute, Unix s */
    tg_dec sum;
    int64_t count;
    int64_t last_ts, last_seq;
    tg_dec last_value;
} tg_bucket;

/* One row of an event summary list. */
typedef struct tg_summary {
    int64_t start, end;
    tg_dec value;
} tg_summary;

typedef struct tg_adjustment {
    char event_name[TG_NAME_MAX + 1];
    char identifier[TG_NAME_MAX + 1];
    bool livemode;
} tg_adjustment;

/* A meter event session token (v2 stream). */
typedef struct tg_session {
    char id[TG_ID_MAX];
    char token[TG_ID_MAX];
    int64_t created, expires_at;
    bool livemode;
    char key_hash[65]; /* SHA-256 of the secret key that made it; "" if not known */
} tg_session;

/* Count of stream events refused by asynchronous validation, per (meter, reason). */
typedef struct tg_meter_error {
    char id[TG_ID_MAX];
    char meter_id[TG_ID_MAX]; /* "" when no meter matched */
    char code[48];
    int64_t count;
    char last_message[256];
    int64_t last_seen;
    bool livemode;
} tg_meter_error;

/* A stored idempotent response. */
typedef struct tg_idem {
    char request_hash[65];
    int status;
    const char *body;
    size_t body_len;
    int64_t created;
} tg_idem;

#endif
