/* decimal.h -- exact fixed-point decimals for usage values and aggregates.
 *
 * A tg_dec is a signed 128-bit integer counting units of 10^-12, so it holds every value with
 * at most 12 fractional digits and magnitude below 1.7e26 exactly. No floating point is ever
 * involved: 0.1 + 0.2 is exactly 0.3. Parsing accepts only plain decimal notation
 * (-?digits[.digits]), never exponents, hex, infinities or surrounding blanks. Arithmetic is
 * checked and reports overflow instead of wrapping.
 */
#ifndef TG_DECIMAL_H
#define TG_DECIMAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

__extension__ typedef __int128 tg_dec;

#define TG_DEC_SCALE_DIGITS 12
#define TG_DEC_MAX_INT_DIGITS 26
#define TG_DEC_ONE ((tg_dec)1000000000000LL)
#define TG_DEC_STR_MAX 48 /* sign + 27 integer digits + point + 12 fraction digits + NUL */

/* Parses s[0..len) into *out. Returns 0, or -1 when it is not a plain decimal, has more than
 * 12 fractional digits, or more than 26 integer digits. */
int tg_dec_parse(const char *s, size_t len, tg_dec *out);

/* Formats d in its shortest exact form ("0.3", "-12", "5.000001") into buf
 * (TG_DEC_STR_MAX bytes). Returns the length written. */
size_t tg_dec_format(tg_dec d, char *buf);

/* *out = a + b; returns 0, or -1 on overflow (out untouched). */
int tg_dec_add(tg_dec a, tg_dec b, tg_dec *out);

/* *out = a - b; returns 0, or -1 on overflow. */
int tg_dec_sub(tg_dec a, tg_dec b, tg_dec *out);

/* A whole number n as a decimal. */
tg_dec tg_dec_from_int(int64_t n);

/* Stores d in 16 little-endian bytes and back, for storage adapters. */
void tg_dec_to_bytes(tg_dec d, unsigned char out[16]);
tg_dec tg_dec_from_bytes(const unsigned char in[16]);

#endif
