/* service_internal.h -- what service.c shares with the service's other use-case files
 * (billing.c): running store work on a reader or on the writer, metered usage over a time
 * range, and the test clock times the event path reads. Not for the edges (http/, cli/).
 */
#ifndef TG_SERVICE_INTERNAL_H
#define TG_SERVICE_INTERNAL_H

#include "core/billing.h"
#include "core/service.h"
#include "core/writer.h"

/* Seconds in a unit of the webhook retry schedule (the service's setting). */
int64_t tg_service_webhook_retry_unit(const tg_service *svc);

/* Runs fn with a reading connection (committed state). */
int tg_service_read(tg_service *svc, tg_job_fn fn, void *arg, tg_err *err);

/* Runs fn as a writer job and waits for its commit. A failed job reloads the customer
 * registry (jobs may have changed customers). arg must start with the tg_service pointer. */
int tg_service_write(tg_service *svc, tg_job_fn fn, void *arg, tg_err *err);

/* The meter's aggregate (its formula) of a customer's usage with from <= timestamp < to,
 * current to the last acknowledged event. Usage is kept per minute: the bounds are taken
 * down to their minute, so the minute holding a bound belongs to the later range. s is the
 * caller's connection (a reader, or the writer's inside a job: folds run after jobs, so the
 * stored pages plus the live overlay are exactly the committed usage). *count gets the
 * number of events (may be NULL). TG_ENOTFOUND names no parameter when the meter is gone. */
int tg_usage_between(tg_service *svc, tg_store *s, const tg_scope *scope, const char *meter_id,
                     const char *customer_id, int64_t from, int64_t to, tg_dec *out,
                     int64_t *count, tg_err *err);

/* Test clocks as the event path sees them: the clock's frozen time and when it is deleted
 * (Stripe deletes a test clock 30 days after its creation, with its customers), kept in
 * memory and updated by the writer jobs that create, advance and delete clocks. */
void tg_clock_registry_set(tg_service *svc, const tg_scope *scope, const char *id,
                           int64_t frozen_time, int64_t deletes_after);
void tg_clock_registry_remove(tg_service *svc, const tg_scope *scope, const char *id);

/* Records the customer in the registry (the writer job that changed it calls this). */
int tg_customer_registry_put(tg_service *svc, const tg_scope *scope, const tg_customer *c);

/* The active meter of an event name (false when there is none). */
bool tg_meter_for_event(tg_service *svc, const tg_scope *scope, const char *event_name,
                        tg_meter *out);

/* The row number of a live customer, or 0. */
int64_t tg_customer_seq(tg_service *svc, const tg_scope *scope, const char *id);

/* The check registry of entitlements.c, owned by the service. The writer calls
 * tg_ent_on_usage for every committed usage delta, before it answers the batch. */
struct tg_ent_registry **tg_service_entitlements(tg_service *svc);
struct tg_ent_registry *tg_ent_registry_new(void);
void tg_ent_registry_clear(struct tg_ent_registry *r);
/* Drops one customer's entry (its next use loads it again). */
void tg_ent_registry_forget(struct tg_ent_registry *r, const tg_scope *scope,
                            const char *customer);
void tg_ent_registry_free(struct tg_ent_registry *r);
/* The usage sessions the registry holds (live ones only), for tests. */
size_t tg_ent_registry_sessions(struct tg_ent_registry *r);
void tg_ent_on_usage(void *ctx, int64_t meter_seq, int64_t customer_seq, int64_t minute,
                     tg_dec sum);
/* At start-up: records the units of usage sessions whose last heartbeat was committed but not
 * yet recorded as a meter event (a crash in between), whether or not the call goes on; what
 * fails is logged and left to the session's next heartbeat. */
void tg_usage_sessions_recover(tg_service *svc, const char *account);

/* The time of the customer's world: its test clock's frozen time, else the server's clock. */
int64_t tg_customer_now(tg_service *svc, const tg_scope *scope, const char *customer_id);

/* Defined in catalog.c: a clock's frozen time, and when it is deleted (deletes_after may be
 * NULL), read through s (TG_ENOTFOUND naming `test_clock` when there is none). */
int tg_test_clock_time(tg_service *svc, tg_store *s, const tg_scope *scope, const char *id,
                       int64_t *frozen, int64_t *deletes_after, tg_err *err);

/* Defined in catalog.c: records an event of type about obj (of kind) at now, from a writer
 * job that is not a billing one (meters), before the job saves the change it records (an
 * *.updated event's previous_attributes compare with the stored row). *queued: whether it
 * queued webhook deliveries (the sender is nudged after the commit). */
int tg_billing_emit(tg_service *svc, tg_store *s, const tg_scope *scope, int64_t now,
                    const char *type, tg_obj_kind kind, const void *obj, tg_arena *a,
                    bool *queued, tg_err *err);

/* Defined in billing.c: records a customer's writer job's customer.created, .updated or
 * .deleted event, before the job saves the change (an update's previous_attributes compare
 * with the stored row). A deletion first cancels the customer's live subscriptions at its
 * time, without a final invoice, as Stripe does. *queued: whether the event queued webhook
 * deliveries (the sender is nudged after the commit). */
int tg_billing_customer_event(tg_service *svc, tg_store *s, const tg_scope *scope,
                              const char *type, const tg_customer *cu, tg_arena *a,
                              bool *queued, tg_err *err);

/* Defined in billing.c: at start-up, before the scheduler runs, gives each schedule that a
 * data directory from before schedules were stored on their own keeps only in its
 * subscription a row of its own (once per directory; account is the directory's). */
int tg_billing_schedule_rows(tg_service *svc, const char *account, tg_err *err);

/* billing.c's state, owned by the service (NULL until tg_billing_start). */
struct tg_billing **tg_service_billing(tg_service *svc);

/* Sets up billing (billing.c) and starts its scheduler thread when asked, from
 * tg_service_open; tg_billing_stop from tg_service_close. */
int tg_billing_start(tg_service *svc, bool scheduler);
void tg_billing_stop(tg_service *svc);

#endif
