/* Compiled fast path of the canonical core: canonical bytes (profile v1), fmt9 and
 * round9, HMAC-SHA256, strict base64 and the Theil-Sen slope.
 *
 * Why this file exists: signing and verifying a PCS is the hot loop of every
 * agent and verifier, and the pure-Python code spends most of its time in
 * interpreter overhead rather than in SHA-256. The pure-Python modules
 * canonical.py, signing.py and signals.py stay the normative reference and the
 * oracle of the differential tests (each function here is an entry of the
 * registry flk.impl.core.accel, which names its test); this module only takes
 * the common, unremarkable case and answers None for anything else, so the
 * caller falls back to the careful pure path. Every byte written here is the
 * byte the reference writes:
 *
 *   - floats: Python's format(v, ".9f") rounds the exact binary value half to
 *     even; fmt9_exact does the same in exact integer arithmetic for |v| < 2^53
 *     and larger values go through PyOS_double_to_string(v, 'f', 9, 0), the
 *     conversion behind format() itself. Negative zero (and anything that
 *     rounds to it) is written as 0.000000000; NaN and infinities are left to
 *     the pure path;
 *   - strings: only those needing no escape (no U+0000..U+001F, quote or
 *     backslash) and holding no lone surrogate are handled, written as UTF-8;
 *   - epoch: exact int in [0, 2^53-1].
 *
 * HMAC-SHA256 (RFC 2104) is built on libcrypto's SHA-256 block functions,
 * which skip the per-call algorithm fetch of OpenSSL 3's HMAC() one-shot.
 *
 * The verifier's compiled module (impl/verifier/_fastverify.c) uses these
 * functions through the table of _fastcore.h (a capsule); the constants shared
 * with Python come from the generated _fastcore_constants.h.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Init & co. are deprecated in 3.0, not removed */
#include <Python.h>
#include <limits.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <string.h>

#include "_fastcore.h"
#include "_fastcore_constants.h"

/* Field order of the canonical object (code-point order of the keys). */
static const char *FIELD_NAMES[N_FIELDS] = FIELD_NAMES_INIT;
static const int FIELD_KINDS[N_FIELDS] = FIELD_KINDS_INIT;
static PyObject *field_keys[N_FIELDS]; /* interned key strings */

/* One field's text, ready to copy: floats and the epoch as ASCII, strings as UTF-8 length. */
typedef struct {
    char *heap;       /* PyOS_double_to_string result (freed by the caller) */
    const char *text; /* what to copy for floats and the epoch */
    char small[32];   /* the epoch's digits, or a float's fmt9 text */
    Py_ssize_t len;   /* bytes written for this value (strings: UTF-8 length) */
    PyObject *str;    /* the string value (borrowed) */
} field_text;

/* ---- strings ---------------------------------------------------------- */

/* 1 for the ASCII characters RFC 8785 escapes: U+0000..U+001F, quote, backslash. */
static const unsigned char ASCII_NEEDS_ESCAPE[128] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    ['"'] = 1, ['\\'] = 1,
};

/* UTF-8 length of ``s`` if it needs no escaping and holds no surrogate, else -1. */
static Py_ssize_t plain_utf8_length(PyObject *s)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s), out = 0;
    if (PyUnicode_IS_ASCII(s)) { /* the common case (hex digests, shard names): one byte each */
        const Py_UCS1 *bytes = PyUnicode_1BYTE_DATA(s);
        unsigned char needs_escape = 0;
        for (Py_ssize_t i = 0; i < n; i++)
            needs_escape |= ASCII_NEEDS_ESCAPE[bytes[i]];
        return needs_escape ? -1 : n;
    }
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 0x20 || c == '"' || c == '\\' || (c >= 0xD800 && c <= 0xDFFF))
            return -1;
        out += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
    }
    return out;
}

/* Writes the characters of ``s`` (checked by plain_utf8_length) as UTF-8. */
static char *write_utf8(char *p, PyObject *s)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    if (PyUnicode_IS_ASCII(s)) {
        memcpy(p, PyUnicode_1BYTE_DATA(s), (size_t)n);
        return p + n;
    }
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 0x80) {
            *p++ = (char)c;
        } else if (c < 0x800) {
            *p++ = (char)(0xC0 | (c >> 6));
            *p++ = (char)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            *p++ = (char)(0xE0 | (c >> 12));
            *p++ = (char)(0x80 | ((c >> 6) & 0x3F));
            *p++ = (char)(0x80 | (c & 0x3F));
        } else {
            *p++ = (char)(0xF0 | (c >> 18));
            *p++ = (char)(0x80 | ((c >> 12) & 0x3F));
            *p++ = (char)(0x80 | ((c >> 6) & 0x3F));
            *p++ = (char)(0x80 | (c & 0x3F));
        }
    }
    return p;
}

/* ---- field preparation ------------------------------------------------ */

/* fmt9 of |v| < 2^53 by exact integer arithmetic: |v| = m / 2^shift exactly
 * (m < 2^53), so its whole part is m >> shift and its fraction low / 2^shift;
 * low * 10^9 < 2^83 is divided by 2^shift and rounded half-to-even on the exact
 * remainder -- the correctly rounded result format(v, ".9f") also gives.
 * Writes at most 27 bytes into ``out``; returns the length, or 0 if |v| >= 2^53. */
static int fmt9_exact(double v, char *out)
{
    int exponent;
    double fraction = frexp(fabs(v), &exponent); /* |v| = fraction * 2^exponent, fraction in [0.5, 1) */
    if (exponent > 53)
        return 0;
    unsigned long long m = (unsigned long long)ldexp(fraction, 53); /* exact: 53-bit mantissa */
    int shift = 53 - exponent;                                        /* |v| = m / 2^shift, shift >= 0 */
    unsigned long long whole = shift == 0 ? m : shift < 64 ? m >> shift : 0;
    unsigned long long low = shift == 0 ? 0 : shift < 64 ? m & ((1ULL << shift) - 1) : m;
    unsigned long long frac = 0;
    if (shift > 0 && shift < 84) { /* shift >= 84: low * 10^9 < 2^83 <= half, rounds to 0 */
        unsigned __int128 scaled = (unsigned __int128)low * 1000000000u;
        unsigned __int128 half = (unsigned __int128)1 << (shift - 1);
        unsigned __int128 rest = scaled & ((half << 1) - 1);
        frac = (unsigned long long)(scaled >> shift);
        if (rest > half || (rest == half && (frac & 1)))
            frac += 1;
        if (frac == 1000000000u) { /* rounded up into the next whole number */
            frac = 0;
            whole += 1;
        }
    }
    char digits[20], *p = out;
    int n = 0;
    if (v < 0 && (whole || frac)) /* negative zero, and what rounds to it, is 0.000000000 */
        *p++ = '-';
    do {
        digits[n++] = (char)('0' + whole % 10);
        whole /= 10;
    } while (whole);
    while (n)
        *p++ = digits[--n];
    *p++ = '.';
    for (int i = 8; i >= 0; i--) {
        p[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    return (int)(p + 9 - out);
}

/* 1: prepared; 0: not the common case (caller answers None); -1: error set. */
static int prepare_float(PyObject *value, field_text *ft)
{
    if (!PyFloat_CheckExact(value))
        return 0;
    double v = PyFloat_AS_DOUBLE(value);
    if (!isfinite(v))
        return 0;
    ft->len = fmt9_exact(v, ft->small);
    if (ft->len > 0) {
        ft->text = ft->small;
        return 1;
    }
    ft->heap = PyOS_double_to_string(v, 'f', 9, 0, NULL); /* |v| >= 2^53: Python's own conversion */
    if (ft->heap == NULL)
        return -1;
    ft->text = ft->heap;
    ft->len = (Py_ssize_t)strlen(ft->heap);
    if (ft->len == 12 && strcmp(ft->heap, "-0.000000000") == 0) {
        ft->text = ft->heap + 1; /* negative zero is written as 0.000000000 */
        ft->len = 11;
    }
    return 1;
}

static int prepare_epoch(PyObject *value, field_text *ft)
{
    if (!PyLong_CheckExact(value))
        return 0;
    int overflow = 0;
    long long e = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow || e < 0 || e > CANON_EPOCH_MAX) {
        PyErr_Clear();
        return 0;
    }
    char digits[20];
    int n = 0;
    do {
        digits[n++] = (char)('0' + e % 10);
        e /= 10;
    } while (e);
    for (ft->len = 0; n;)
        ft->small[ft->len++] = digits[--n];
    ft->text = ft->small;
    return 1;
}

static int prepare_string(PyObject *value, field_text *ft)
{
    if (!PyUnicode_CheckExact(value))
        return 0;
    ft->len = plain_utf8_length(value);
    if (ft->len < 0)
        return 0;
    ft->str = value;
    return 1;
}

/* Prepares all eight fields of ``subset`` (an exact dict). Same return convention. */
static int prepare_fields(PyObject *subset, field_text *fields)
{
    for (int i = 0; i < N_FIELDS; i++) {
        PyObject *value = PyDict_GetItemWithError(subset, field_keys[i]);
        if (value == NULL) {
            PyErr_Clear(); /* missing, or a key whose comparison raised: the pure path reports it */
            return 0;
        }
        int ok = FIELD_KINDS[i] == F_FLOAT ? prepare_float(value, &fields[i])
                 : FIELD_KINDS[i] == F_INT ? prepare_epoch(value, &fields[i])
                                           : prepare_string(value, &fields[i]);
        if (ok != 1)
            return ok;
    }
    return 1;
}

/* ---- canonical bytes -------------------------------------------------- */

static PyObject *assemble(const field_text *fields)
{
    Py_ssize_t total = 2; /* braces */
    for (int i = 0; i < N_FIELDS; i++) {
        total += (Py_ssize_t)strlen(FIELD_NAMES[i]) + 3 + fields[i].len; /* "name": */
        total += FIELD_KINDS[i] == F_STR ? 2 : 0;                        /* quotes */
        total += i ? 1 : 0;                                               /* comma */
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        return NULL;
    char *p = PyBytes_AS_STRING(out);
    *p++ = '{';
    for (int i = 0; i < N_FIELDS; i++) {
        size_t name_len = strlen(FIELD_NAMES[i]);
        if (i)
            *p++ = ',';
        *p++ = '"';
        memcpy(p, FIELD_NAMES[i], name_len);
        p += name_len;
        *p++ = '"';
        *p++ = ':';
        if (FIELD_KINDS[i] == F_STR) {
            *p++ = '"';
            p = write_utf8(p, fields[i].str);
            *p++ = '"';
        } else {
            memcpy(p, fields[i].text, (size_t)fields[i].len);
            p += fields[i].len;
        }
    }
    *p++ = '}';
    return out;
}

PyDoc_STRVAR(canonical_v1_doc,
"canonical_v1(subset) -> bytes | None\n\n"
"Canonical bytes (profile v1) of an exact dict in the common case; None when the\n"
"careful pure path must decide (missing field, other types, escapes, NaN, ...).");

static PyObject *canonical_v1(PyObject *Py_UNUSED(module), PyObject *subset)
{
    if (!PyDict_CheckExact(subset))
        Py_RETURN_NONE;
    field_text fields[N_FIELDS];
    memset(fields, 0, sizeof fields);
    int ok = prepare_fields(subset, fields);
    PyObject *out = ok == 1 ? assemble(fields) : NULL;
    for (int i = 0; i < N_FIELDS; i++)
        PyMem_Free(fields[i].heap);
    if (ok == 0)
        Py_RETURN_NONE;
    return out;
}

/* ---- HMAC-SHA256 ------------------------------------------------------ */

static void hmac_sha256(const unsigned char *key, size_t key_len, const unsigned char *msg,
                        size_t msg_len, unsigned char out[SHA256_DIGEST_LENGTH])
{
    unsigned char block[SHA256_CBLOCK], hashed_key[SHA256_DIGEST_LENGTH];
    SHA256_CTX ctx;
    if (key_len > SHA256_CBLOCK) { /* RFC 2104: longer keys are hashed first */
        SHA256(key, key_len, hashed_key);
        key = hashed_key;
        key_len = SHA256_DIGEST_LENGTH;
    }
    memset(block, 0, sizeof block);
    memcpy(block, key, key_len);
    for (size_t i = 0; i < SHA256_CBLOCK; i++)
        block[i] ^= 0x36;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, block, SHA256_CBLOCK);
    SHA256_Update(&ctx, msg, msg_len);
    SHA256_Final(out, &ctx);
    for (size_t i = 0; i < SHA256_CBLOCK; i++)
        block[i] ^= 0x36 ^ 0x5c;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, block, SHA256_CBLOCK);
    SHA256_Update(&ctx, out, SHA256_DIGEST_LENGTH);
    SHA256_Final(out, &ctx);
    OPENSSL_cleanse(block, sizeof block);
    OPENSSL_cleanse(hashed_key, sizeof hashed_key);
    OPENSSL_cleanse(&ctx, sizeof ctx);
}

static const char B64_ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard base64 with padding of 32 bytes: 44 ASCII characters. */
static PyObject *b64_of_digest(const unsigned char *raw)
{
    PyObject *out = PyUnicode_New(44, 127);
    if (out == NULL)
        return NULL;
    Py_UCS1 *p = PyUnicode_1BYTE_DATA(out);
    size_t i = 0;
    for (; i + 3 <= 32; i += 3) {
        unsigned long v = ((unsigned long)raw[i] << 16) | ((unsigned long)raw[i + 1] << 8) | raw[i + 2];
        *p++ = B64_ALPHABET[(v >> 18) & 63];
        *p++ = B64_ALPHABET[(v >> 12) & 63];
        *p++ = B64_ALPHABET[(v >> 6) & 63];
        *p++ = B64_ALPHABET[v & 63];
    }
    unsigned long v = ((unsigned long)raw[30] << 16) | ((unsigned long)raw[31] << 8);
    *p++ = B64_ALPHABET[(v >> 18) & 63];
    *p++ = B64_ALPHABET[(v >> 12) & 63];
    *p++ = B64_ALPHABET[(v >> 6) & 63];
    *p++ = '=';
    return out;
}

static int exact_bytes_arg(PyObject *obj, const char *what)
{
    if (PyBytes_CheckExact(obj))
        return 1;
    PyErr_Format(PyExc_TypeError, "%s must be bytes, got %.100s", what, Py_TYPE(obj)->tp_name);
    return 0;
}

PyDoc_STRVAR(hmac_sha256_b64_doc,
"hmac_sha256_b64(key, msg) -> str\n\n"
"base64(HMAC-SHA256(key, msg)), standard alphabet with padding; key and msg are bytes.");

static PyObject *hmac_sha256_b64(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char digest[SHA256_DIGEST_LENGTH];
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "hmac_sha256_b64 takes exactly two arguments (key, msg)");
        return NULL;
    }
    if (!exact_bytes_arg(args[0], "key") || !exact_bytes_arg(args[1], "msg"))
        return NULL;
    hmac_sha256((const unsigned char *)PyBytes_AS_STRING(args[0]), (size_t)PyBytes_GET_SIZE(args[0]),
                (const unsigned char *)PyBytes_AS_STRING(args[1]), (size_t)PyBytes_GET_SIZE(args[1]),
                digest);
    return b64_of_digest(digest);
}

PyDoc_STRVAR(hmac_sha256_any_doc,
"hmac_sha256_any(keys, msg, expected) -> bool\n\n"
"True iff HMAC-SHA256(key, msg) equals ``expected`` for one of ``keys`` (a list of\n"
"bytes). Every key is tried and compared in constant time.");

static PyObject *hmac_sha256_any(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char digest[SHA256_DIGEST_LENGTH];
    if (nargs != 3 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "hmac_sha256_any takes (keys: list of bytes, msg, expected)");
        return NULL;
    }
    if (!exact_bytes_arg(args[1], "msg") || !exact_bytes_arg(args[2], "expected"))
        return NULL;
    PyObject *keys = args[0];
    Py_ssize_t n = PyList_GET_SIZE(keys);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!exact_bytes_arg(PyList_GET_ITEM(keys, i), "every key"))
            return NULL;
    }
    int match = 0;
    int right_length = PyBytes_GET_SIZE(args[2]) == SHA256_DIGEST_LENGTH;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        hmac_sha256((const unsigned char *)PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key),
                    (const unsigned char *)PyBytes_AS_STRING(args[1]), (size_t)PyBytes_GET_SIZE(args[1]),
                    digest);
        if (right_length)
            match |= CRYPTO_memcmp(digest, PyBytes_AS_STRING(args[2]), SHA256_DIGEST_LENGTH) == 0;
    }
    return PyBool_FromLong(match);
}

/* ---- strict base64 ---------------------------------------------------- */

static int b64_value(Py_UCS1 c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decodes one 4-character group; returns bytes written, or -1 if not canonical. */
static int decode_group(const Py_UCS1 *g, int last, unsigned char *out)
{
    int a = b64_value(g[0]), b = b64_value(g[1]), c = b64_value(g[2]), d = b64_value(g[3]);
    if (a < 0 || b < 0)
        return -1;
    if (last && g[2] == '=' && g[3] == '=') {
        if (b & 15)
            return -1; /* trailing bits set */
        out[0] = (unsigned char)((a << 2) | (b >> 4));
        return 1;
    }
    if (c < 0)
        return -1;
    if (last && g[3] == '=') {
        if (c & 3)
            return -1;
        out[0] = (unsigned char)((a << 2) | (b >> 4));
        out[1] = (unsigned char)(((b & 15) << 4) | (c >> 2));
        return 2;
    }
    if (d < 0)
        return -1;
    out[0] = (unsigned char)((a << 2) | (b >> 4));
    out[1] = (unsigned char)(((b & 15) << 4) | (c >> 2));
    out[2] = (unsigned char)(((c & 3) << 6) | d);
    return 3;
}

PyDoc_STRVAR(b64decode_canonical_doc,
"b64decode_canonical(text) -> bytes | None\n\n"
"The bytes of ``text`` if it is strict, canonical standard base64 (alphabet,\n"
"padding, length, zero trailing bits); None otherwise (the pure path explains why).");

static PyObject *b64decode_canonical(PyObject *Py_UNUSED(module), PyObject *text)
{
    if (!PyUnicode_CheckExact(text) || !PyUnicode_IS_ASCII(text))
        Py_RETURN_NONE;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (n % 4)
        Py_RETURN_NONE;
    const Py_UCS1 *data = PyUnicode_1BYTE_DATA(text);
    PyObject *out = PyBytes_FromStringAndSize(NULL, n / 4 * 3);
    if (out == NULL)
        return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    Py_ssize_t written = 0;
    for (Py_ssize_t i = 0; i < n; i += 4) {
        int got = decode_group(data + i, i + 4 == n, p + written);
        if (got < 0) {
            Py_DECREF(out);
            Py_RETURN_NONE;
        }
        written += got;
    }
    if (written != n / 4 * 3 && _PyBytes_Resize(&out, written) < 0)
        return NULL;
    return out;
}


/* ---- decimal numbers ------------------------------------------------------ */

/* 10^0 .. 10^22: exact doubles (Clinger's fast path below). */
static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The double nearest to the decimal ``text`` (a JSON number token, n bytes) when
 * Clinger's fast path applies -- at most 19 significant digits giving a
 * mantissa M <= 2^53 and a power of ten 10^k with |k| <= 22: M and 10^k are
 * exact doubles, so one IEEE multiplication or division is the correctly
 * rounded value, the one float(text) also returns. 0: use the slow path. */
static int decimal_fast(const char *text, Py_ssize_t n, double *out)
{
    const char *p = text, *end = text + n;
    int negative = *p == '-';
    unsigned long long m = 0;
    int digits = 0, k = 0;
    p += negative;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        if (digits || *p != '0') {
            if (++digits > 19)
                return 0;
        }
        m = m * 10 + (unsigned long long)(*p - '0');
    }
    if (p < end && *p == '.') {
        for (p++; p < end && *p >= '0' && *p <= '9'; p++) {
            if (digits || *p != '0') {
                if (++digits > 19)
                    return 0;
            }
            m = m * 10 + (unsigned long long)(*p - '0');
            k--;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        int sign = 1, e = 0;
        p++;
        if (*p == '+' || *p == '-')
            sign = *p++ == '-' ? -1 : 1;
        for (; p < end; p++) {
            if (e > 1000)
                return 0;
            e = e * 10 + (*p - '0');
        }
        k += sign * e;
    }
    if (m > (1ULL << 53) || k < -22 || k > 22)
        return 0;
    double v = k < 0 ? (double)m / POW10[-k] : (double)m * POW10[k];
    *out = negative ? -v : v;
    return 1;
}

/* ---- signals: Theil-Sen slope and round9 -------------------------------- */

/* Theil-Sen slope of log2(c) on log2(s) over n <= TS_MAX_SCALES exact values:
 * same log2, same slope order, a stable sort (as sorted()), same median.
 * 0 when a slope is not finite (equal scales: the reference raises). */
static int theil_sen_core(const long long *s, const long long *c, Py_ssize_t n, int legacy, double *out)
{
    double xs[TS_MAX_SCALES], ys[TS_MAX_SCALES], slopes[TS_MAX_SCALES * (TS_MAX_SCALES - 1) / 2];
    for (Py_ssize_t i = 0; i < n; i++) {
        xs[i] = log2((double)s[i]); /* math.log2(int): the int as a double, then libm log2 */
        ys[i] = log2((double)c[i]);
    }
    int m = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        for (Py_ssize_t j = i + 1; j < n; j++) {
            double slope = (ys[j] - ys[i]) / (xs[j] - xs[i]);
            if (!isfinite(slope))
                return 0;
            int k = m++;
            while (k > 0 && slope < slopes[k - 1]) { /* stable insertion sort, like sorted() */
                slopes[k] = slopes[k - 1];
                k--;
            }
            slopes[k] = slope;
        }
    int middle = m / 2;
    *out = legacy || m % 2 ? slopes[middle] : (slopes[middle - 1] + slopes[middle]) / 2.0;
    return 1;
}

PyDoc_STRVAR(theil_sen_doc,
"theil_sen(scales, counts, legacy) -> float | None\n\n"
"signals.theil_sen_slope for lists of exact ints (scales in [1, 2^31], counts\n"
"in [1, 2^53], at most 16). None: the reference computes it.");

static PyObject *theil_sen(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[1]))
        Py_RETURN_NONE;
    Py_ssize_t n = PyList_GET_SIZE(args[0]);
    int legacy = PyObject_IsTrue(args[2]);
    if (legacy < 0 || n < 2 || n > TS_MAX_SCALES || PyList_GET_SIZE(args[1]) != n) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    long long scales[TS_MAX_SCALES], counts[TS_MAX_SCALES];
    double slope;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!flk_int_in(PyList_GET_ITEM(args[0], i), 1, TS_SCALE_MAX, &scales[i])
            || !flk_int_in(PyList_GET_ITEM(args[1], i), 1, 1LL << 53, &counts[i]))
            Py_RETURN_NONE;
    if (!theil_sen_core(scales, counts, n, legacy, &slope))
        Py_RETURN_NONE;
    return PyFloat_FromDouble(slope);
}

/* round9 of a finite double below 2^53 in magnitude; 0 otherwise. */
static int round9_core(double x, double *out)
{
    char text[32];
    if (!isfinite(x))
        return 0;
    int n = fmt9_exact(x, text);
    if (n == 0)
        return 0;
    text[n] = '\0';
    if (decimal_fast(text, n, out))
        return 1;
    *out = PyOS_string_to_double(text, NULL, NULL);
    if (*out == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

PyDoc_STRVAR(round9_doc,
"round9(x) -> float | None\n\n"
"float(fmt9(x)) for a finite exact float below 2^53 in magnitude; None otherwise.");

static PyObject *round9(PyObject *Py_UNUSED(module), PyObject *x)
{
    double v;
    if (!PyFloat_CheckExact(x) || !round9_core(PyFloat_AS_DOUBLE(x), &v))
        Py_RETURN_NONE;
    return PyFloat_FromDouble(v);
}

/* ---- module ----------------------------------------------------------- */

static PyMethodDef fastcore_methods[] = {
    {"canonical_v1", (PyCFunction)canonical_v1, METH_O, canonical_v1_doc},
    {"hmac_sha256_b64", (PyCFunction)(void (*)(void))hmac_sha256_b64, METH_FASTCALL, hmac_sha256_b64_doc},
    {"hmac_sha256_any", (PyCFunction)(void (*)(void))hmac_sha256_any, METH_FASTCALL, hmac_sha256_any_doc},
    {"b64decode_canonical", (PyCFunction)b64decode_canonical, METH_O, b64decode_canonical_doc},
    {"theil_sen", (PyCFunction)(void (*)(void))theil_sen, METH_FASTCALL, theil_sen_doc},
    {"round9", (PyCFunction)round9, METH_O, round9_doc},
    {NULL, NULL, 0, NULL},
};

static PyObject *canonical_v1_api(PyObject *subset) { return canonical_v1(NULL, subset); }
static PyObject *b64decode_canonical_api(PyObject *text) { return b64decode_canonical(NULL, text); }

static const flk_core_api core_api = {
    .canonical_v1 = canonical_v1_api,
    .hmac_sha256 = hmac_sha256,
    .b64decode_canonical = b64decode_canonical_api,
    .round9 = round9_core,
    .theil_sen = theil_sen_core,
    .decimal_fast = decimal_fast,
};

static struct PyModuleDef fastcore_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_fastcore",
    .m_doc = "Compiled fast path of canonical bytes (profile v1), round9, HMAC-SHA256, strict base64 and Theil-Sen.",
    .m_size = -1,
    .m_methods = fastcore_methods,
};

PyMODINIT_FUNC PyInit__fastcore(void)
{
    for (int i = 0; i < N_FIELDS; i++) {
        if (field_keys[i] == NULL) {
            field_keys[i] = PyUnicode_InternFromString(FIELD_NAMES[i]);
            if (field_keys[i] == NULL)
                return NULL;
        }
    }
    PyObject *module = PyModule_Create(&fastcore_module);
    if (module == NULL)
        return NULL;
    PyObject *capsule = PyCapsule_New((void *)&core_api, FLK_CORE_CAPSULE, NULL);
    if (capsule == NULL || PyModule_AddObject(module, "core_api", capsule) < 0) {
        Py_XDECREF(capsule);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
