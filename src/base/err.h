/* err.h -- Tollgate's one table of error codes.
 *
 * Every fallible function returns 0 (TG_OK) or a negative TG_E* code, and writes detail into a
 * caller-owned tg_err: the parameter at fault and a sentence for a human. The first error
 * recorded wins. The table carries the stable reason name (the Stripe error code the HTTP
 * layer sends) so the edges map a code without knowing the domain; the HTTP status and the
 * Stripe error type are chosen in http/reply.c, exit codes in cli/.
 */
#ifndef TG_ERR_H
#define TG_ERR_H

#include <stdarg.h>

#define TG_ERRNO_MAP(X)                                                                  \
    X(EINVAL, -1, "parameter_invalid", "invalid parameter")                              \
    X(EMISSING, -2, "parameter_missing", "missing required parameter")                   \
    X(EUNKNOWN, -3, "parameter_unknown", "unknown parameter")                            \
    X(EINTEGER, -4, "parameter_invalid_integer", "invalid integer")                      \
    X(EEXCLUSIVE, -5, "parameters_exclusive", "parameters are mutually exclusive")       \
    X(EMALFORMED, -6, "body_malformed", "malformed request body")                        \
    X(ENOTFOUND, -7, "resource_missing", "no such object")                               \
    X(EEXISTS, -8, "resource_already_exists", "object already exists")                  \
    X(ENOMETER, -9, "no_meter", "no active meter for this event name")                   \
    X(EARCHIVED, -10, "archived_meter", "meter is inactive")                             \
    X(ENOCUSTKEY, -11, "meter_event_no_customer_defined", "customer key missing")        \
    X(ECUSTOMER, -12, "meter_event_customer_not_found", "customer not found")            \
    X(ENOVALUE, -13, "meter_event_value_not_found", "value key missing")                 \
    X(EBADVALUE, -14, "meter_event_invalid_value", "value is not a decimal number")      \
    X(ETOOOLD, -15, "timestamp_too_far_in_past", "timestamp too far in the past")        \
    X(EFUTURE, -16, "timestamp_in_future", "timestamp in the future")                    \
    X(EDUPLICATE, -17, "duplicate_meter_event", "duplicate identifier")                  \
    X(ETOOLARGE, -18, "request_too_large", "request body too large")                     \
    X(EBUSY, -19, "rate_limit", "server busy, retry later")                              \
    X(ESTORE, -20, "internal_error", "storage failure")                                  \
    X(ENOMEM, -21, "internal_error", "out of memory")                                    \
    X(EIDEMMISMATCH, -22, "idempotency_key_mismatch", "idempotency key reused")          \
    X(EIDEMBUSY, -23, "idempotency_key_in_use", "idempotency key in use")                \
    X(EAUTHMISSING, -24, "api_key_missing", "no API key provided")                       \
    X(EAUTHINVALID, -25, "api_key_invalid", "invalid API key")                           \
    X(ESESSION, -26, "billing_meter_event_session_expired", "meter event session expired") \
    X(EROUTE, -27, "unrecognized_request_url", "unrecognized request URL")               \
    X(EMETHOD, -28, "method_not_allowed", "method not allowed")                          \
    X(ESHUTDOWN, -29, "internal_error", "server is shutting down")                       \
    X(ESTATE, -30, "resource_state_invalid", "the object's state does not allow this")  \
    X(EPRICEMETER, -31, "price_meter_inactive", "the price's meter is inactive")          \
    X(ENOENTITLEMENT, -32, "entitlement_required", "the customer is not entitled to this") \
    X(ELIMIT, -33, "usage_limit_reached", "the usage limit is reached")                   \
    X(EVALUEDIGITS, -34, "meter_event_value_too_many_digits", "value has too many digits") \
    X(EIDEMLOST, -35, "idempotency_response_lost", "the request ran; its response was lost")

enum {
    TG_OK = 0,
#define X(name, val, reason, msg) TG_##name = val,
    TG_ERRNO_MAP(X)
#undef X
};

typedef struct tg_err {
    int code;        /* TG_OK or a TG_E* code */
    char param[160]; /* the parameter at fault, "" when none */
    char msg[512];   /* a sentence for a human */
} tg_err;

/* Records an error in err unless one is already recorded (the first error wins). err may be
 * NULL. Returns code, so callers can write `return tg_err_set(err, TG_EINVAL, "limit", ...)`.
 * param may be NULL. */
int tg_err_set(tg_err *err, int code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Clears err so it can be reused. */
void tg_err_clear(tg_err *err);

/* The stable reason name of a code ("parameter_missing"); static text, never NULL. */
const char *tg_err_reason(int code);

/* The default message of a code; static text, never NULL. */
const char *tg_strerror(int code);

#endif
