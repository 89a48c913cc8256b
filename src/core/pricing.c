/* pricing.c -- what a price charges for a quantity (see pricing.h).
 *
 * Charges are added unrounded to a money accumulator (money.h), so a line is rounded exactly
 * once whatever its scheme. Tier bounds are whole numbers and quantities tg_dec, so bounds
 * are compared as tg_dec: a volume quantity of 10.5 falls past a tier ending at 10, and a
 * graduated tier (prev, up_to] takes min(max(q - prev, 0), up_to - prev) units, charging its
 * flat amount only when it takes some (tier 0's flat also when q is 0). Negative quantities
 * count as 0 in tg_pricing_charge too, so a caller skipping the transform cannot bill them.
 */
#include "core/pricing.h"

#include <stdio.h>

#include "core/money.h"

static int tiers_fail(int *bad, int index, char *msg, size_t msgcap, const char *text)
{
    *bad = index;
    snprintf(msg, msgcap, "%s", text);
    return -1;
}

int tg_pricing_check_tiers(const tg_tier *tiers, size_t n, int *bad, char *msg, size_t msgcap)
{
    if (n == 0 || n > TG_TIERS_MAX)
        return tiers_fail(bad, -1, msg, msgcap, "A price must have between 1 and 100 tiers.");
    for (size_t i = 0; i < n; i++) {
        const tg_tier *t = &tiers[i];
        int idx = (int)i;
        if (!t->has_unit && !t->has_flat)
            return tiers_fail(bad, idx, msg, msgcap,
                              "Each tier must have a unit_amount or a flat_amount.");
        if ((t->has_unit && t->unit_amount < 0) || (t->has_flat && t->flat_amount < 0))
            return tiers_fail(bad, idx, msg, msgcap, "Tier amounts must not be negative.");
        if (i == n - 1) {
            if (!t->up_to_inf)
                return tiers_fail(bad, idx, msg, msgcap, "The last tier must have up_to `inf`.");
            break;
        }
        if (t->up_to_inf)
            return tiers_fail(bad, idx, msg, msgcap, "Only the last tier may have up_to `inf`.");
        if (t->up_to < 1)
            return tiers_fail(bad, idx, msg, msgcap, "Tier up_to must be a positive integer.");
        if (i > 0 && t->up_to <= tiers[i - 1].up_to)
            return tiers_fail(bad, idx, msg, msgcap,
                              "Tier up_to values must be strictly increasing.");
    }
    return 0;
}

int tg_pricing_quantity(const tg_pricing *p, tg_dec q, tg_dec *out)
{
    if (q < 0)
        q = 0;
    if (p->divide_by == 0) {
        *out = q;
        return 0;
    }
    return tg_dec_divide_round(q, p->divide_by, p->round_up, out);
}

/* acc += units * the tier's unit amount + its flat amount. */
static int charge_tier(const tg_tier *t, tg_dec units, tg_money_acc *acc)
{
    if (t->has_unit && tg_money_acc_add_product(acc, units, t->unit_amount))
        return -1;
    if (t->has_flat && tg_money_acc_add(acc, t->flat_amount))
        return -1;
    return 0;
}

static int charge_volume(const tg_pricing *p, tg_dec q, tg_money_acc *acc)
{
    size_t i = 0;
    while (!p->tiers[i].up_to_inf && q > tg_dec_from_int(p->tiers[i].up_to))
        i++;
    return charge_tier(&p->tiers[i], q, acc);
}

static int charge_graduated(const tg_pricing *p, tg_dec q, tg_money_acc *acc)
{
    if (q == 0)
        return p->tiers[0].has_flat ? tg_money_acc_add(acc, p->tiers[0].flat_amount) : 0;
    tg_dec prev = 0;
    for (size_t i = 0; q > prev; i++) {
        const tg_tier *t = &p->tiers[i];
        tg_dec units = q - prev;
        if (!t->up_to_inf) {
            tg_dec up_to = tg_dec_from_int(t->up_to);
            if (units > up_to - prev)
                units = up_to - prev;
            prev = up_to;
        }
        if (charge_tier(t, units, acc))
            return -1;
        if (t->up_to_inf)
            break;
    }
    return 0;
}

int tg_pricing_charge(const tg_pricing *p, tg_dec q, struct tg_money_acc *acc)
{
    if (q < 0)
        q = 0;
    if (p->scheme == TG_SCHEME_PER_UNIT)
        return tg_money_acc_add_product(acc, q, p->unit_amount);
    /* The loops stop at the inf tier, which checked tiers always end with. */
    if (p->ntiers == 0 || !p->tiers[p->ntiers - 1].up_to_inf)
        return -1;
    return p->tiers_mode == TG_TIERS_VOLUME ? charge_volume(p, q, acc)
                                            : charge_graduated(p, q, acc);
}

int tg_pricing_amount(const tg_pricing *p, tg_dec q, int64_t *amount)
{
    tg_money_acc acc = tg_money_acc_zero();
    tg_dec billable;
    if (tg_pricing_quantity(p, q, &billable) || tg_pricing_charge(p, billable, &acc))
        return -1;
    return tg_money_acc_round(&acc, 1, amount);
}
