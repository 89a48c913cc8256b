/* billing_records.h -- the stored form of billing objects (see billing_records.c).
 * Encoders append to b (b->failed on allocation failure); decoders return 0, or -1 when the
 * record is corrupt or memory ran out, with strings and arrays in a. */
#ifndef TG_BILLING_RECORDS_H
#define TG_BILLING_RECORDS_H

#include "base/buf.h"
#include "core/billing.h"

void tg_product_encode(tg_buf *b, const tg_product *p);
int tg_product_decode(const void *data, size_t len, tg_arena *a, tg_product *p);
void tg_price_encode(tg_buf *b, const tg_price *p);
int tg_price_decode(const void *data, size_t len, tg_arena *a, tg_price *p);
void tg_test_clock_encode(tg_buf *b, const tg_test_clock *c);
int tg_test_clock_decode(const void *data, size_t len, tg_arena *a, tg_test_clock *c);
void tg_subscription_encode(tg_buf *b, const tg_subscription *s);
int tg_subscription_decode(const void *data, size_t len, tg_arena *a, tg_subscription *s);
void tg_sub_schedule_encode(tg_buf *b, const tg_sub_schedule *k);
int tg_sub_schedule_decode(const void *data, size_t len, tg_arena *a, tg_sub_schedule *k);
void tg_invoice_encode(tg_buf *b, const tg_invoice *v);
int tg_invoice_decode(const void *data, size_t len, tg_arena *a, tg_invoice *v);
void tg_feature_encode(tg_buf *b, const tg_feature *f);
/* Whether two customers have the same stored fields (false when memory ran out). */
bool tg_customer_same(const tg_customer *x, const tg_customer *y);
int tg_feature_decode(const void *data, size_t len, tg_arena *a, tg_feature *f);
void tg_product_feature_encode(tg_buf *b, const tg_product_feature *p);
int tg_product_feature_decode(const void *data, size_t len, tg_arena *a, tg_product_feature *p);
void tg_grants_encode(tg_buf *b, const tg_grant *g, size_t n);
int tg_grants_decode(const void *data, size_t len, tg_arena *a, tg_grant **out, size_t *n);
void tg_ent_summary_encode(tg_buf *b, const tg_entitlement_summary *s);
int tg_ent_summary_decode(const void *data, size_t len, tg_arena *a, tg_entitlement_summary *s);
void tg_usage_session_encode(tg_buf *b, const tg_usage_session *u);
int tg_usage_session_decode(const void *data, size_t len, tg_arena *a, tg_usage_session *u);
struct tg_webhook_endpoint;
void tg_webhook_endpoint_encode(tg_buf *b, const struct tg_webhook_endpoint *w);
int tg_webhook_endpoint_decode(const void *data, size_t len, tg_arena *a,
                               struct tg_webhook_endpoint *w);
void tg_billing_event_encode(tg_buf *b, const tg_billing_event *e);
int tg_billing_event_decode(const void *data, size_t len, tg_arena *a, tg_billing_event *e);

#endif
