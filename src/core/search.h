/* search.h -- GET /v1/{customers,products,prices,subscriptions,invoices}/search: Stripe's
 * search over a mode's objects (see search.c; the language is search_query.h's).
 */
#ifndef TG_SEARCH_H
#define TG_SEARCH_H

#include <stdbool.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/err.h"
#include "core/billing.h"
#include "core/service.h"

typedef enum {
    TG_SEARCH_CUSTOMERS, TG_SEARCH_PRODUCTS, TG_SEARCH_PRICES, TG_SEARCH_SUBSCRIPTIONS,
    TG_SEARCH_INVOICES
} tg_search_resource;

#define TG_SEARCH_TOTAL_MAX 10000 /* total_count counts this far, as Stripe's */

typedef struct tg_search_request {
    const char *query;
    int limit;        /* 1..100 */
    const char *page; /* a previous answer's next_page, or NULL */
    bool total_count; /* count every match (expand[]=total_count) */
} tg_search_request;

typedef struct tg_search_result {
    /* tg_customer, tg_product, tg_price, tg_subscription or tg_invoice, by resource */
    void *items;
    size_t n;
    bool has_more;
    const char *next_page; /* NULL when !has_more */
    int64_t next_page_seq; /* the row it starts below (tg_search's) */
    int64_t total_count;   /* when asked, up to TG_SEARCH_TOTAL_MAX */
} tg_search_result;

/* Newest first. TG_EINVAL naming `query` for a query that does not parse, naming `page` for a
 * page that is not one this search gave. */
int tg_search(tg_service *svc, const tg_scope *scope, tg_search_resource r,
              const tg_search_request *q, tg_arena *a, tg_search_result *out, tg_err *err);

#endif
