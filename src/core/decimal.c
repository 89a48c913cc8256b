/* decimal.c -- exact fixed-point decimal arithmetic (see decimal.h).
 *
 * The representation is an __int128 in units of 10^-12. Parsing accumulates digits into the
 * integer and pads the fraction to 12 digits; with at most 26 integer digits the magnitude
 * stays below 10^38 < 2^127, so parsing itself can never overflow. Addition uses the
 * compiler's overflow builtins.
 */
#include "core/decimal.h"

#include <string.h>

int tg_dec_parse(const char *s, size_t len, tg_dec *out)
{
    size_t i = 0;
    bool neg = false;
    if (i < len && s[i] == '-') {
        neg = true;
        i++;
    }
    size_t int_digits = 0, frac_digits = 0;
    tg_dec v = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        v = v * 10 + (s[i] - '0');
        i++;
        if (++int_digits > TG_DEC_MAX_INT_DIGITS)
            return -1;
    }
    if (i < len && s[i] == '.') {
        i++;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            if (++frac_digits > TG_DEC_SCALE_DIGITS)
                return -1;
            v = v * 10 + (s[i] - '0');
            i++;
        }
        if (frac_digits == 0)
            return -1; /* "1." is not a number */
    }
    if (i != len || int_digits == 0)
        return -1; /* trailing junk, or ".5" / "-" / "" */
    for (size_t k = frac_digits; k < TG_DEC_SCALE_DIGITS; k++)
        v *= 10;
    *out = neg ? -v : v;
    return 0;
}

size_t tg_dec_format(tg_dec d, char *buf)
{
    char tmp[TG_DEC_STR_MAX];
    size_t n = 0;
    bool neg = d < 0;
    /* Work on the magnitude as unsigned so the most negative value formats correctly. */
    unsigned __int128 u = neg ? (unsigned __int128)0 - (unsigned __int128)d : (unsigned __int128)d;
    unsigned __int128 ip = u / (unsigned __int128)TG_DEC_ONE;
    unsigned long long fp = (unsigned long long)(u % (unsigned __int128)TG_DEC_ONE);
    do {
        tmp[n++] = (char)('0' + (int)(ip % 10));
        ip /= 10;
    } while (ip);
    size_t len = 0;
    if (neg)
        buf[len++] = '-';
    while (n)
        buf[len++] = tmp[--n];
    if (fp) {
        char frac[TG_DEC_SCALE_DIGITS];
        for (int k = TG_DEC_SCALE_DIGITS - 1; k >= 0; k--) {
            frac[k] = (char)('0' + (int)(fp % 10));
            fp /= 10;
        }
        int last = TG_DEC_SCALE_DIGITS - 1;
        while (frac[last] == '0')
            last--;
        buf[len++] = '.';
        memcpy(buf + len, frac, (size_t)last + 1);
        len += (size_t)last + 1;
    }
    buf[len] = '\0';
    return len;
}

int tg_dec_add(tg_dec a, tg_dec b, tg_dec *out)
{
    tg_dec r;
    if (__builtin_add_overflow(a, b, &r))
        return -1;
    *out = r;
    return 0;
}

int tg_dec_sub(tg_dec a, tg_dec b, tg_dec *out)
{
    tg_dec r;
    if (__builtin_sub_overflow(a, b, &r))
        return -1;
    *out = r;
    return 0;
}

tg_dec tg_dec_from_int(int64_t n)
{
    return (tg_dec)n * TG_DEC_ONE;
}

void tg_dec_to_bytes(tg_dec d, unsigned char out[16])
{
    unsigned __int128 u = (unsigned __int128)d;
    for (int i = 0; i < 16; i++) {
        out[i] = (unsigned char)(u & 0xff);
        u >>= 8;
    }
}

tg_dec tg_dec_from_bytes(const unsigned char in[16])
{
    unsigned __int128 u = 0;
    for (int i = 15; i >= 0; i--)
        u = (u << 8) | in[i];
    return (tg_dec)u;
}
