/* money.c -- currencies and exact money arithmetic (see money.h).
 *
 * The accumulator is a 256-bit two's complement integer in four little-endian 64-bit limbs.
 * Multiplication works on magnitudes: a 128 x 128 product is built from four 64 x 64 partial
 * products (unsigned __int128), so it is exact and at most 2^254, and the sign is applied
 * afterwards. Additions detect signed overflow from the operands' and the result's signs.
 *
 * Rounding divides the magnitude by den * 10^24 half away from zero: since that divisor is
 * even, the result is floor((|acc| + den * 10^24 / 2) / (den * 10^24)), and the floor of a
 * division by a product is the floor of successive divisions by its factors. So the
 * magnitude, plus the half divisor, is divided by den, then by 10^12 twice, each a 256-by-64
 * long division, which is exact for every den in 1..INT64_MAX.
 *
 * Currencies are one static table sorted by code, searched with bsearch.
 */
#include "core/money.h"

#include <stdlib.h>
#include <string.h>

typedef unsigned __int128 u128;

#define POW10_12 1000000000000ULL

/* ---- 256-bit helpers ---- */

static bool acc_negative(const tg_money_acc *a)
{
    return a->limb[3] >> 63;
}

/* Wrapping two's complement negation. */
static tg_money_acc acc_neg(const tg_money_acc *a)
{
    tg_money_acc r;
    unsigned carry = 1;
    for (int i = 0; i < 4; i++) {
        uint64_t x = ~a->limb[i];
        r.limb[i] = x + carry;
        carry = carry && r.limb[i] == 0;
    }
    return r;
}

/* Wrapping addition modulo 2^256. */
static void acc_add_wrap(tg_money_acc *a, const tg_money_acc *b)
{
    unsigned carry = 0;
    for (int i = 0; i < 4; i++) {
        u128 s = (u128)a->limb[i] + b->limb[i] + carry;
        a->limb[i] = (uint64_t)s;
        carry = (unsigned)(s >> 64);
    }
}

/* Signed addition: -1 when the sum leaves the 256-bit range (a is then unspecified). */
static int acc_add_signed(tg_money_acc *a, const tg_money_acc *b)
{
    bool sa = acc_negative(a), sb = acc_negative(b);
    acc_add_wrap(a, b);
    return sa == sb && acc_negative(a) != sa ? -1 : 0;
}

/* The magnitude of a signed 128-bit value (2^127 for the most negative one). */
static u128 mag128(tg_dec v)
{
    return v < 0 ? (u128)0 - (u128)v : (u128)v;
}

/* Exact unsigned 128 x 128 -> 256 product. */
static tg_money_acc mul_u128(u128 a, u128 b)
{
    uint64_t a0 = (uint64_t)a, a1 = (uint64_t)(a >> 64);
    uint64_t b0 = (uint64_t)b, b1 = (uint64_t)(b >> 64);
    u128 p00 = (u128)a0 * b0, p01 = (u128)a0 * b1, p10 = (u128)a1 * b0, p11 = (u128)a1 * b1;
    /* Column 1 collects three 64-bit halves, so it can carry up to 2 into column 2. */
    u128 mid = (p00 >> 64) + (uint64_t)p01 + (uint64_t)p10;
    u128 high = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64); /* < 2^128: the product fits */
    tg_money_acc r = {{(uint64_t)p00, (uint64_t)mid, (uint64_t)high, (uint64_t)(high >> 64)}};
    return r;
}

/* a /= d (d > 0) as an unsigned 256-bit long division, one limb at a time. */
static void div_u64(tg_money_acc *a, uint64_t d)
{
    u128 rem = 0;
    for (int i = 3; i >= 0; i--) {
        u128 cur = rem << 64 | a->limb[i]; /* rem < d, so the limb quotient fits 64 bits */
        a->limb[i] = (uint64_t)(cur / d);
        rem = cur % d;
    }
}

/* ---- accumulator ---- */

tg_money_acc tg_money_acc_zero(void)
{
    tg_money_acc z = {{0, 0, 0, 0}};
    return z;
}

int tg_money_acc_add_product(tg_money_acc *acc, tg_dec a, tg_dec b)
{
    tg_money_acc p = mul_u128(mag128(a), mag128(b)); /* <= 2^254: positive as signed */
    if ((a < 0) != (b < 0))
        p = acc_neg(&p);
    return acc_add_signed(acc, &p);
}

int tg_money_acc_add(tg_money_acc *acc, tg_dec d)
{
    return tg_money_acc_add_product(acc, d, TG_DEC_ONE); /* 10^-12 units * 10^12 */
}

int tg_money_acc_mul_int(tg_money_acc *acc, int64_t num)
{
    bool neg = acc_negative(acc);
    tg_money_acc m = neg ? acc_neg(acc) : *acc; /* magnitude, up to 2^255 as unsigned */
    uint64_t n = num < 0 ? 0 - (uint64_t)num : (uint64_t)num;
    uint64_t carry = 0;
    for (int i = 0; i < 4; i++) {
        u128 p = (u128)m.limb[i] * n + carry;
        m.limb[i] = (uint64_t)p;
        carry = (uint64_t)(p >> 64);
    }
    if (num < 0)
        neg = !neg;
    /* The magnitude must fit in 255 bits, or be exactly 2^255 for a negative result. */
    bool is_2_255 = m.limb[3] == (uint64_t)1 << 63 && !m.limb[2] && !m.limb[1] && !m.limb[0];
    if (carry || (acc_negative(&m) && !(neg && is_2_255)))
        return -1;
    *acc = neg ? acc_neg(&m) : m;
    return 0;
}

int tg_money_acc_round(const tg_money_acc *acc, int64_t den, int64_t *out)
{
    if (den <= 0)
        return -1;
    bool neg = acc_negative(acc);
    tg_money_acc m = neg ? acc_neg(acc) : *acc; /* <= 2^255 */
    /* Half the divisor, den * 5 * 10^23 < 2^142; the sum stays below 2^256. */
    tg_money_acc half = mul_u128((u128)den, (u128)5 * POW10_12 * (POW10_12 / 10));
    acc_add_wrap(&m, &half);
    div_u64(&m, (uint64_t)den);
    div_u64(&m, POW10_12);
    div_u64(&m, POW10_12);
    if (m.limb[3] || m.limb[2] || m.limb[1] || m.limb[0] > (uint64_t)INT64_MAX + neg)
        return -1;
    *out = neg && m.limb[0] ? -(int64_t)(m.limb[0] - 1) - 1 : (int64_t)m.limb[0];
    return 0;
}

/* ---- whole numbers ---- */

int tg_dec_divide_round(tg_dec q, int64_t divide_by, bool round_up, tg_dec *out)
{
    if (divide_by <= 0)
        return -1;
    u128 d = (u128)divide_by * POW10_12; /* < 2^103 */
    u128 m = mag128(q);
    u128 n = m / d;
    if (round_up && m % d)
        n++;
    /* 2^127 is no multiple of 10^12, so this bound keeps n * 10^12 below 2^127. */
    if (n > ((u128)1 << 127) / POW10_12)
        return -1;
    tg_dec r = (tg_dec)(n * POW10_12);
    *out = q < 0 ? -r : r;
    return 0;
}

int tg_dec_trunc(tg_dec d, int64_t *out)
{
    tg_dec w = d / TG_DEC_ONE; /* C division truncates toward zero */
    if (w < INT64_MIN || w > INT64_MAX)
        return -1;
    *out = (int64_t)w;
    return 0;
}

/* ---- currencies ---- */

typedef struct currency {
    char code[4];
    int exponent;
} currency;

/* Stripe's presentment currencies, sorted by code. */
static const currency CURRENCIES[] = {
    {"aed", 2}, {"afn", 2}, {"all", 2}, {"amd", 2}, {"ang", 2}, {"aoa", 2}, {"ars", 2},
    {"aud", 2}, {"awg", 2}, {"azn", 2}, {"bam", 2}, {"bbd", 2}, {"bdt", 2}, {"bgn", 2},
    {"bhd", 3}, {"bif", 0}, {"bmd", 2}, {"bnd", 2}, {"bob", 2}, {"brl", 2}, {"bsd", 2},
    {"bwp", 2}, {"byn", 2}, {"bzd", 2}, {"cad", 2}, {"cdf", 2}, {"chf", 2}, {"clp", 0},
    {"cny", 2}, {"cop", 2}, {"crc", 2}, {"cve", 2}, {"czk", 2}, {"djf", 0}, {"dkk", 2},
    {"dop", 2}, {"dzd", 2}, {"egp", 2}, {"etb", 2}, {"eur", 2}, {"fjd", 2}, {"fkp", 2},
    {"gbp", 2}, {"gel", 2}, {"gip", 2}, {"gmd", 2}, {"gnf", 0}, {"gtq", 2}, {"gyd", 2},
    {"hkd", 2}, {"hnl", 2}, {"htg", 2}, {"huf", 2}, {"idr", 2}, {"ils", 2}, {"inr", 2},
    {"isk", 2}, {"jmd", 2}, {"jod", 3}, {"jpy", 0}, {"kes", 2}, {"kgs", 2}, {"khr", 2},
    {"kmf", 0}, {"krw", 0}, {"kwd", 3}, {"kyd", 2}, {"kzt", 2}, {"lak", 2}, {"lbp", 2},
    {"lkr", 2}, {"lrd", 2}, {"lsl", 2}, {"mad", 2}, {"mdl", 2}, {"mga", 0}, {"mkd", 2},
    {"mmk", 2}, {"mnt", 2}, {"mop", 2}, {"mur", 2}, {"mvr", 2}, {"mwk", 2}, {"mxn", 2},
    {"myr", 2}, {"mzn", 2}, {"nad", 2}, {"ngn", 2}, {"nio", 2}, {"nok", 2}, {"npr", 2},
    {"nzd", 2}, {"omr", 3}, {"pab", 2}, {"pen", 2}, {"pgk", 2}, {"php", 2}, {"pkr", 2},
    {"pln", 2}, {"pyg", 0}, {"qar", 2}, {"ron", 2}, {"rsd", 2}, {"rub", 2}, {"rwf", 0},
    {"sar", 2}, {"sbd", 2}, {"scr", 2}, {"sek", 2}, {"sgd", 2}, {"shp", 2}, {"sle", 2},
    {"sos", 2}, {"srd", 2}, {"std", 2}, {"szl", 2}, {"thb", 2}, {"tjs", 2}, {"tnd", 3},
    {"top", 2}, {"try", 2}, {"ttd", 2}, {"twd", 2}, {"tzs", 2}, {"uah", 2}, {"ugx", 0},
    {"usd", 2}, {"uyu", 2}, {"uzs", 2}, {"vnd", 0}, {"vuv", 0}, {"wst", 2}, {"xaf", 0},
    {"xcd", 2}, {"xcg", 2}, {"xof", 0}, {"xpf", 0}, {"yer", 2}, {"zar", 2}, {"zmw", 2},
};

static int currency_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const currency *)elem)->code);
}

static const currency *currency_find(const char *code)
{
    return bsearch(code, CURRENCIES, sizeof CURRENCIES / sizeof CURRENCIES[0],
                   sizeof CURRENCIES[0], currency_cmp);
}

bool tg_currency_known(const char *code)
{
    return currency_find(code) != NULL;
}

int tg_currency_exponent(const char *code)
{
    const currency *c = currency_find(code);
    return c ? c->exponent : 2;
}
