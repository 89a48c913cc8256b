/* money.h -- currencies, exact money arithmetic and the one rounding rule of invoicing.
 *
 * Prices carry amounts in a currency's minor unit with up to 12 fractional digits (tg_dec:
 * unit_amount_decimal "0.2" is a fifth of a cent); quantities are tg_dec as well. The product
 * of two tg_dec has 24 fractional digits, more than 128 bits hold at useful magnitudes, so
 * line amounts are accumulated exactly in a 256-bit signed integer counting 10^-24 minor units
 * (tg_money_acc) and rounded once, at the end of a line, half away from zero, to a whole
 * number of minor units. Nothing here uses floating point.
 */
#ifndef TG_MONEY_H
#define TG_MONEY_H

#include <stdbool.h>
#include <stdint.h>

#include "core/decimal.h"

/* Whether `code` is a lowercase ISO 4217 code Tollgate accepts (Stripe's presentment
 * currencies). */
bool tg_currency_known(const char *code);

/* Digits of the minor unit: 0 for Stripe's zero-decimal currencies (bif clp djf gnf jpy kmf
 * krw mga pyg rwf ugx vnd vuv xaf xof xpf), 3 for bhd jod kwd omr tnd, else 2. */
int tg_currency_exponent(const char *code);

/* An exact signed sum of products, in 10^-24 minor units (256-bit two's complement,
 * little-endian 64-bit limbs). Start from tg_money_acc_zero(). Each operation returns 0, or -1
 * on overflow (the accumulator is then unspecified). */
typedef struct tg_money_acc {
    uint64_t limb[4];
} tg_money_acc;

tg_money_acc tg_money_acc_zero(void);
/* acc += a * b (both tg_dec: 10^-12 units each, so the product is in 10^-24 units). */
int tg_money_acc_add_product(tg_money_acc *acc, tg_dec a, tg_dec b);
/* acc += d (a tg_dec amount of minor units, scaled to 10^-24). */
int tg_money_acc_add(tg_money_acc *acc, tg_dec d);
/* acc = acc * num (a proration fraction's numerator; num may be negative). */
int tg_money_acc_mul_int(tg_money_acc *acc, int64_t num);
/* *out = acc / den rounded once, half away from zero, to whole minor units (den > 0, e.g.
 * the seconds of a period for proration; 1 for none). Returns -1 when den <= 0 or the result
 * does not fit int64_t. */
int tg_money_acc_round(const tg_money_acc *acc, int64_t den, int64_t *out);

/* q / divide_by rounded to a whole number, up (away from zero) or down (toward zero):
 * Stripe's transform_quantity. divide_by > 0. Returns -1 on overflow. */
int tg_dec_divide_round(tg_dec q, int64_t divide_by, bool round_up, tg_dec *out);

/* The whole part of d, truncated toward zero (a line's integer `quantity`). Returns -1 when it
 * does not fit int64_t. */
int tg_dec_trunc(tg_dec d, int64_t *out);

#endif
