/* pricing.h -- what a price charges for a quantity: per unit, tiered (graduated or volume),
 * with transform_quantity, exactly.
 *
 * Amounts are tg_dec minor units (unit_amount_decimal semantics: up to 12 fractional digits);
 * quantities are tg_dec (metered aggregates may be fractional). The result is one whole number
 * of minor units, rounded once (money.h). Tier semantics follow Stripe: a tier covers
 * (previous up_to, up_to]; volume prices every unit at the tier the total falls in; graduated
 * prices each unit at its own tier and charges the flat amount of every tier it enters; a
 * quantity of 0 is charged the first tier's flat amount in both modes.
 */
#ifndef TG_PRICING_H
#define TG_PRICING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/decimal.h"

#define TG_TIERS_MAX 100

typedef enum { TG_SCHEME_PER_UNIT, TG_SCHEME_TIERED } tg_billing_scheme;
typedef enum { TG_TIERS_GRADUATED, TG_TIERS_VOLUME } tg_tiers_mode;

typedef struct tg_tier {
    bool up_to_inf;          /* the last tier: up_to = "inf" (null on the wire) */
    int64_t up_to;           /* inclusive upper bound, >= 1, increasing across tiers */
    bool has_unit, has_flat; /* at least one is set */
    tg_dec unit_amount, flat_amount;
} tg_tier;

typedef struct tg_pricing {
    tg_billing_scheme scheme;
    tg_dec unit_amount;       /* per_unit: minor units per unit */
    tg_tiers_mode tiers_mode; /* tiered */
    const tg_tier *tiers;
    size_t ntiers;
    int64_t divide_by; /* transform_quantity; 0 = none (never with tiers) */
    bool round_up;     /* transform_quantity[round] = up */
} tg_pricing;

/* Checks tier rules: 1..TG_TIERS_MAX tiers, each with a unit or flat amount (non-negative),
 * up_to strictly increasing, exactly the last one inf. Returns 0 or -1 with a message in msg
 * (msgcap bytes) and the index of the faulty tier in *bad (-1 for the whole list). */
int tg_pricing_check_tiers(const tg_tier *tiers, size_t n, int *bad, char *msg, size_t msgcap);

/* The billable quantity after transform_quantity (q itself when there is none). Negative
 * quantities count as 0 (Stripe bills negative cycle usage as 0). */
int tg_pricing_quantity(const tg_pricing *p, tg_dec q, tg_dec *out);

/* Adds what `p` charges for (already transformed) quantity q to acc, unrounded. Callers add
 * a line's parts, scale by a proration fraction if any, then round once with
 * tg_money_acc_round. Returns 0 or -1 on overflow. */
struct tg_money_acc;
int tg_pricing_charge(const tg_pricing *p, tg_dec q, struct tg_money_acc *acc);

/* Convenience: transform, charge and round once. *amount in whole minor units. */
int tg_pricing_amount(const tg_pricing *p, tg_dec q, int64_t *amount);

#endif
