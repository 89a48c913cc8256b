/* entitlements.h -- features, what products grant, what customers may use now, and hard usage
 * caps checked in memory.
 *
 * A customer's active entitlements are derived from its subscriptions (trialing, active and
 * past_due grant; paused and canceled do not): every feature attached to a product of one of
 * their items. A product feature may carry a usage limit (a Tollgate extension): a quantity of
 * an additive meter, counted over the granting subscription's current period, enforced hard
 * (refused beyond) or soft (reported only).
 *
 * Checks are answered from memory: each customer's entitlements are kept in a registry that
 * the writer updates in the same job as the change that causes it, and each limit has a usage
 * counter that the writer advances with every committed batch, before anyone is told the batch
 * is committed. A check after an acknowledged event therefore sees it; nothing is cached that
 * could serve an older answer.
 */
#ifndef TG_ENTITLEMENTS_H
#define TG_ENTITLEMENTS_H

#include <stdbool.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/err.h"
#include "core/model.h"

typedef struct tg_service tg_service;

#define TG_LOOKUP_KEY_MAX 80

typedef struct tg_feature {
    char id[TG_ID_MAX];
    int64_t created;
    bool livemode, active;
    const char *name;
    char lookup_key[TG_LOOKUP_KEY_MAX + 1];
    tg_metadata metadata;
} tg_feature;

typedef struct tg_usage_limit {
    bool set;
    char meter[TG_ID_MAX];
    tg_dec quantity;
    bool hard;
} tg_usage_limit;

typedef struct tg_product_feature {
    char id[TG_ID_MAX];
    char product[TG_ID_MAX];
    int64_t created;
    bool livemode;
    tg_feature feature; /* the entitlement_feature, as it is now */
    tg_usage_limit limit;
} tg_product_feature;

typedef struct tg_active_entitlement {
    char id[TG_ID_MAX];
    char feature[TG_ID_MAX];
    char lookup_key[TG_LOOKUP_KEY_MAX + 1];
    bool livemode;
} tg_active_entitlement;

/* One feature a customer is entitled to now, with its limit and the period it counts over
 * (the granting subscription's current period). */
typedef struct tg_grant {
    char feature[TG_ID_MAX];
    char lookup_key[TG_LOOKUP_KEY_MAX + 1];
    tg_usage_limit limit;
    int64_t period_start, period_end;
    /* Which period the minute holding period_start counts in (see entitlements.c,
     * count_from): TG_GRANT_START_OWN, TG_GRANT_START_PREVIOUS, or 0 in grants stored
     * before it was recorded (recomputed when loaded). */
    int start_minute;
} tg_grant;

#define TG_GRANT_START_OWN 1      /* a subscription's first period: its own */
#define TG_GRANT_START_PREVIOUS 2 /* a later one: the period before it billed that minute */

/* The answer of GET /v1/entitlements/check. */
typedef struct tg_ent_check {
    bool entitled;
    const char *reason; /* NULL, "no_entitlement" or "limit_reached" */
    bool has_limit;
    char meter[TG_ID_MAX];
    tg_dec quantity, used, reserved, remaining;
    bool hard;
    int64_t period_start, period_end;
} tg_ent_check;

/* A metered call (an extension): usage recorded as meter events while it runs, against the
 * feature's limit. Units are those of the meter: seconds for rounding `second`, minutes for
 * `minute_up` (a started minute is billed when it starts, as telephony bills). */
typedef enum {
    TG_USESS_ACTIVE, TG_USESS_LIMIT_REACHED, TG_USESS_ENDED, TG_USESS_EXPIRED
} tg_usess_status;

typedef struct tg_usage_session {
    char id[TG_ID_MAX];
    char customer[TG_ID_MAX];
    char feature[TG_LOOKUP_KEY_MAX + 1];
    char event_name[TG_NAME_MAX + 1];
    tg_metadata payload; /* dimensions recorded with every event (agent_id, ...) */
    bool minute_up;
    int64_t heartbeat_timeout;
    bool livemode, limited;
    tg_usess_status status;
    int64_t created, last_heartbeat, ended_at;
    int64_t recorded; /* units recorded as meter events */
    int64_t reserved; /* units granted beyond `recorded` */
    int64_t seq;      /* events recorded so far */
    int64_t pending;  /* units of event `seq` while it is being recorded (0: none) */
    /* Answers: */
    int64_t granted_seconds; /* call time allowed from now */
    tg_dec remaining;        /* limited: units left to others and later grants */
} tg_usage_session;

typedef struct tg_usage_session_params {
    const char *customer, *feature, *event_name;
    tg_metadata payload;
    bool minute_up;
    int64_t heartbeat_timeout; /* 0 = 30 s */
} tg_usage_session_params;

int tg_usage_session_start(tg_service *svc, const tg_scope *scope,
                           const tg_usage_session_params *p, tg_arena *a,
                           tg_usage_session *out, tg_err *err);
/* Records the time since the last heartbeat; end=true ends the session. */
int tg_usage_session_heartbeat(tg_service *svc, const tg_scope *scope, const char *id, bool end,
                               tg_arena *a, tg_usage_session *out, tg_err *err);
int tg_usage_session_retrieve(tg_service *svc, const tg_scope *scope, const char *id,
                              tg_arena *a, tg_usage_session *out, tg_err *err);

int tg_feature_create(tg_service *svc, const tg_scope *scope, const char *name,
                      const char *lookup_key, const tg_metadata *metadata, tg_arena *a,
                      tg_feature *out, tg_err *err);
/* active 0 archives (for good); name NULL keeps it. */
int tg_feature_update(tg_service *svc, const tg_scope *scope, const char *id, const char *name,
                      int active, bool metadata_clear, const tg_metadata *metadata, tg_arena *a,
                      tg_feature *out, tg_err *err);
int tg_feature_retrieve(tg_service *svc, const tg_scope *scope, const char *id, tg_arena *a,
                        tg_feature *out, tg_err *err);
/* archived: -1 any (the default lists active ones only: pass 0), 1 archived only. */
int tg_feature_list(tg_service *svc, const tg_scope *scope, int archived, const char *lookup_key,
                    const tg_page *page, tg_arena *a, tg_feature **out, size_t *n,
                    bool *has_more, tg_err *err);

int tg_product_feature_attach(tg_service *svc, const tg_scope *scope, const char *product,
                              const char *feature, const tg_usage_limit *limit, tg_arena *a,
                              tg_product_feature *out, tg_err *err);
int tg_product_feature_retrieve(tg_service *svc, const tg_scope *scope, const char *product,
                                const char *id, tg_arena *a, tg_product_feature *out,
                                tg_err *err);
int tg_product_feature_list(tg_service *svc, const tg_scope *scope, const char *product,
                            const tg_page *page, tg_arena *a, tg_product_feature **out,
                            size_t *n, bool *has_more, tg_err *err);
int tg_product_feature_detach(tg_service *svc, const tg_scope *scope, const char *product,
                              const char *id, tg_err *err);

int tg_active_entitlement_list(tg_service *svc, const tg_scope *scope, const char *customer,
                               const tg_page *page, tg_arena *a, tg_active_entitlement **out,
                               size_t *n, bool *has_more, tg_err *err);
int tg_active_entitlement_retrieve(tg_service *svc, const tg_scope *scope, const char *id,
                                   tg_arena *a, tg_active_entitlement *out, tg_err *err);

/* May the customer use feature (a lookup key), and spend `want` more of its limit (0: just
 * "is it entitled")? */
int tg_entitlement_check(tg_service *svc, const tg_scope *scope, const char *customer,
                         const char *feature, tg_dec want, tg_ent_check *out, tg_err *err);

#endif
