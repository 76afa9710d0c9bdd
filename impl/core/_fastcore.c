/* Compiled fast path of the canonical core (profile v1) and HMAC-SHA256.
 *
 * Why this file exists: signing and verifying a PCS is the hot loop of every
 * agent and verifier, and the pure-Python code spends most of its time in
 * interpreter overhead rather than in SHA-256. The pure-Python modules
 * canonical.py and signing.py stay the normative reference and the oracle of
 * the differential tests (tests/foundation/test_fastcore.py); this module only
 * takes the common, unremarkable case and answers None for anything else, so
 * the caller falls back to the careful pure path. Every byte written here is
 * the byte the reference writes:
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
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Init & co. are deprecated in 3.0, not removed */
#include <Python.h>
#include <limits.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <string.h>

#define EPOCH_MAX ((long long)9007199254740991LL) /* 2^53 - 1 */
#define N_FIELDS 8

/* Field order of the canonical object (code-point order of the keys). */
static const char *FIELD_NAMES[N_FIELDS] = {
    "D_hat", "budget", "coh_star", "epoch", "merkle_root", "pcs_id", "r", "shard_id",
};
enum { F_FLOAT, F_INT, F_STR };
static const int FIELD_KINDS[N_FIELDS] = {F_FLOAT, F_FLOAT, F_FLOAT, F_INT, F_STR, F_STR, F_FLOAT, F_STR};
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
    if (overflow || e < 0 || e > EPOCH_MAX) {
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

/* ---- strict JSON (parse_json) ----------------------------------------- */
/* The accept path of wire.parse_strict: RFC 8259 JSON in UTF-8, no duplicate
 * keys, no NaN/Infinity. Anything unusual -- any syntax error, a backslash
 * escape, a number token longer than 300 characters or not finite as a
 * double, nesting deeper than JSON_MAX_DEPTH, a duplicate key -- makes the
 * parser give up (None), and the reference parser then decides (and writes
 * every error message). Numbers are converted exactly as Python's json does:
 * int(token) without fraction or exponent, else float(token). */
#define JSON_MAX_DEPTH 64
#define JSON_MAX_NUMBER 300

typedef struct {
    const unsigned char *p, *end;
    int depth;
} json_parser;

static PyObject *json_value(json_parser *jp);
static PyObject *known_key(const unsigned char *text, Py_ssize_t n);

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

static inline void json_ws(json_parser *jp)
{
    while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\t' || *jp->p == '\n' || *jp->p == '\r'))
        jp->p++;
}

/* After the opening quote; NULL: give up. */
static PyObject *json_string(json_parser *jp)
{
    const unsigned char *start = jp->p, *p = jp->p, *end = jp->end;
    unsigned char high = 0;
    while (p < end && *p != '"') {
        if (*p < 0x20 || *p == '\\')
            return NULL; /* control character (an error) or an escape: the reference decides */
        high |= *p++;
    }
    if (p == end)
        return NULL;
    jp->p = p + 1;
    Py_ssize_t n = p - start;
    if (high < 0x80) {
        PyObject *known = known_key(start, n); /* a PCS field name: the shared interned string */
        if (known != NULL)
            return Py_NewRef(known);
        PyObject *s = PyUnicode_New(n, 127);
        if (s != NULL)
            memcpy(PyUnicode_1BYTE_DATA(s), start, (size_t)n);
        return s;
    }
    return PyUnicode_DecodeUTF8((const char *)start, n, "strict"); /* invalid UTF-8: error, give up */
}

static PyObject *json_number(json_parser *jp)
{
    const unsigned char *start = jp->p, *p = jp->p, *end = jp->end;
    int is_float = 0;
    if (p < end && *p == '-')
        p++;
    if (p < end && *p == '0')
        p++;
    else if (p < end && *p >= '1' && *p <= '9')
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    else
        return NULL;
    if (p < end && *p == '.') {
        if (!(p + 1 < end && p[1] >= '0' && p[1] <= '9'))
            return NULL; /* "1." is an error */
        p++;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        is_float = 1;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        const unsigned char *q = p + 1;
        if (q < end && (*q == '+' || *q == '-'))
            q++;
        if (!(q < end && *q >= '0' && *q <= '9'))
            return NULL;
        while (q < end && *q >= '0' && *q <= '9')
            q++;
        p = q;
        is_float = 1;
    }
    Py_ssize_t n = p - start;
    if (n > JSON_MAX_NUMBER)
        return NULL;
    jp->p = p;
    char buf[JSON_MAX_NUMBER + 1];
    memcpy(buf, start, (size_t)n);
    buf[n] = '\0';
    if (!is_float) {
        if (n <= 18) { /* fits a long long: no bignum parse */
            long long v = 0;
            const char *d = buf + (buf[0] == '-');
            for (; *d; d++)
                v = v * 10 + (*d - '0');
            return PyLong_FromLongLong(buf[0] == '-' ? -v : v);
        }
        return PyLong_FromString(buf, NULL, 10); /* int(token) */
    }
    double v;
    if (decimal_fast(buf, n, &v))
        return PyFloat_FromDouble(v);
    char *stop = NULL;
    v = PyOS_string_to_double(buf, &stop, NULL); /* float(token); overflow gives inf */
    if ((v == -1.0 && PyErr_Occurred()) || stop != buf + n || !isfinite(v))
        return NULL;
    return PyFloat_FromDouble(v);
}

/* Adds key -> value to ``out``, consuming both; -1 on a duplicate key or an error. */
static int json_insert(PyObject *out, PyObject *key, PyObject *value)
{
    Py_ssize_t before = PyDict_GET_SIZE(out);
    int rc = PyDict_SetItem(out, key, value);
    Py_DECREF(key);
    Py_DECREF(value);
    return rc < 0 || PyDict_GET_SIZE(out) == before ? -1 : 0; /* a duplicate: the reference names it */
}

/* A dict presized for ``n`` pairs holding them (all consumed); NULL on a duplicate or an error. */
static PyObject *json_pairs_dict(PyObject **keys, PyObject **values, Py_ssize_t n, Py_ssize_t room)
{
    PyObject *out = _PyDict_NewPresized(room);
    Py_ssize_t i = 0;
    for (; out != NULL && i < n; i++) {
        if (json_insert(out, keys[i], values[i]) < 0) {
            Py_CLEAR(out);
            i++;
            break;
        }
    }
    for (; i < n; i++) {
        Py_DECREF(keys[i]);
        Py_DECREF(values[i]);
    }
    return out;
}

#define JSON_PAIRS 32 /* pairs collected before the dict is made (one allocation, no resize) */

static PyObject *json_object(json_parser *jp)
{
    PyObject *keys[JSON_PAIRS], *values[JSON_PAIRS], *out = NULL;
    Py_ssize_t n = 0;
    json_ws(jp);
    if (jp->p < jp->end && *jp->p == '}') {
        jp->p++;
        return PyDict_New();
    }
    for (;;) {
        if (!(jp->p < jp->end && *jp->p == '"'))
            goto fail;
        jp->p++;
        PyObject *key = json_string(jp);
        if (key == NULL)
            goto fail;
        json_ws(jp);
        if (!(jp->p < jp->end && *jp->p == ':')) {
            Py_DECREF(key);
            goto fail;
        }
        jp->p++;
        json_ws(jp);
        PyObject *value = json_value(jp);
        if (value == NULL) {
            Py_DECREF(key);
            goto fail;
        }
        if (out == NULL && n < JSON_PAIRS) {
            keys[n] = key;
            values[n++] = value;
        } else {
            if (out == NULL) {
                out = json_pairs_dict(keys, values, n, 2 * JSON_PAIRS);
                n = 0;
                if (out == NULL) {
                    Py_DECREF(key);
                    Py_DECREF(value);
                    return NULL;
                }
            }
            if (json_insert(out, key, value) < 0)
                goto fail;
        }
        json_ws(jp);
        if (jp->p < jp->end && *jp->p == ',') {
            jp->p++;
            json_ws(jp);
            continue;
        }
        if (jp->p < jp->end && *jp->p == '}') {
            jp->p++;
            if (out == NULL) {
                out = json_pairs_dict(keys, values, n, n);
                n = 0;
            }
            return out;
        }
        goto fail;
    }
fail:
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_DECREF(keys[i]);
        Py_DECREF(values[i]);
    }
    Py_XDECREF(out);
    return NULL;
}

static PyObject *json_array(json_parser *jp)
{
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    json_ws(jp);
    if (jp->p < jp->end && *jp->p == ']') {
        jp->p++;
        return out;
    }
    for (;;) {
        PyObject *value = json_value(jp);
        if (value == NULL)
            goto fail;
        int rc = PyList_Append(out, value);
        Py_DECREF(value);
        if (rc < 0)
            goto fail;
        json_ws(jp);
        if (jp->p < jp->end && *jp->p == ',') {
            jp->p++;
            json_ws(jp);
            continue;
        }
        if (jp->p < jp->end && *jp->p == ']') {
            jp->p++;
            return out;
        }
        goto fail;
    }
fail:
    Py_DECREF(out);
    return NULL;
}

static PyObject *json_literal(json_parser *jp, const char *word, PyObject *value)
{
    size_t n = strlen(word);
    if ((size_t)(jp->end - jp->p) < n || memcmp(jp->p, word, n) != 0)
        return NULL;
    jp->p += n;
    return Py_NewRef(value);
}

static PyObject *json_value(json_parser *jp)
{
    if (jp->p >= jp->end)
        return NULL;
    PyObject *out;
    switch (*jp->p) {
    case '{':
    case '[':
        if (++jp->depth > JSON_MAX_DEPTH)
            return NULL;
        jp->p++;
        out = *(jp->p - 1) == '{' ? json_object(jp) : json_array(jp);
        jp->depth--;
        return out;
    case '"':
        jp->p++;
        return json_string(jp);
    case 't':
        return json_literal(jp, "true", Py_True);
    case 'f':
        return json_literal(jp, "false", Py_False);
    case 'n':
        return json_literal(jp, "null", Py_None);
    default:
        return json_number(jp);
    }
}

PyDoc_STRVAR(parse_json_doc,
"parse_json(body) -> (value,) | None\n\n"
"The accept path of wire.parse_strict for exact bytes: a 1-tuple holding the\n"
"parsed value, or None when the reference parser must decide (any error, any\n"
"escape, long or non-finite numbers, deep nesting, duplicate keys).");

static PyObject *parse_json(PyObject *Py_UNUSED(module), PyObject *body)
{
    if (!PyBytes_CheckExact(body))
        Py_RETURN_NONE;
    json_parser jp = {(const unsigned char *)PyBytes_AS_STRING(body),
                      (const unsigned char *)PyBytes_AS_STRING(body) + PyBytes_GET_SIZE(body), 0};
    json_ws(&jp);
    PyObject *value = json_value(&jp);
    if (value != NULL) {
        json_ws(&jp);
        if (jp.p == jp.end) {
            PyObject *out = PyTuple_New(1);
            if (out == NULL) {
                Py_DECREF(value);
                return NULL;
            }
            PyTuple_SET_ITEM(out, 0, value); /* steals the reference */
            return out;
        }
    }
    Py_XDECREF(value);
    PyErr_Clear();
    Py_RETURN_NONE;
}

/* ---- PCS wire check (pcs_check) ---------------------------------------- */
/* The accept path of wire.validate_pcs: 1 when the document certainly passes
 * every wire check and its pcs_id equals SHA-256(merkle_root|epoch|shard_id),
 * 2 when it passes every check but that one (INV-PCSID), 0 when the reference
 * validator must decide. It is stricter than the rules (exact types, integers
 * that fit 64 bits where a range is checked); never more lenient. */
enum {
    K_PCS_ID, K_SCHEMA, K_VERSION, K_SHARD_ID, K_EPOCH, K_SCALES, K_N_J, K_COH_STAR, K_V_STAR, K_D_HAT,
    K_R, K_REGIME, K_BUDGET, K_MERKLE_ROOT, K_SIG, N_REQUIRED = K_SIG + 1,
    K_SEED = N_REQUIRED, K_SIG_ALG, K_ATTEMPT, K_SENT_AT, K_FT, K_VRF_PROOF, K_META, N_KNOWN,
};
static const char *KNOWN_NAMES[N_KNOWN] = {
    "pcs_id", "schema", "version", "shard_id", "epoch", "scales", "N_j", "coh_star", "v_star", "D_hat",
    "r", "regime", "budget", "merkle_root", "sig", "seed", "sig_alg", "attempt", "sent_at", "ft",
    "vrf_proof", "meta",
};
static PyObject *known_keys[N_KNOWN];
#define SCALE_MAX (1LL << 31)
#define MAX_SCALES 64
#define MAX_DIM 8

/* The decimal digits of 0 <= v, unterminated; returns their count. */
static int write_decimal(char *out, long long v)
{
    char digits[20];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++)
        out[i] = digits[n - 1 - i];
    return n;
}

/* The interned PCS field name spelled by ``text``, or NULL (borrowed). */
static PyObject *known_key(const unsigned char *text, Py_ssize_t n)
{
    if (n > 11 || n < 1)
        return NULL;
    static const unsigned char LENGTHS[N_KNOWN] = {6, 6, 7, 8, 5, 6, 3, 8, 6, 5, 1, 6, 6, 11, 3, 4, 7, 7, 7, 2, 9, 4};
    for (int k = 0; k < N_KNOWN; k++)
        if (LENGTHS[k] == n && KNOWN_NAMES[k][0] == text[0] && memcmp(KNOWN_NAMES[k], text, (size_t)n) == 0)
            return known_keys[k];
    return NULL;
}

static int str_is(PyObject *v, const char *text)
{
    if (!PyUnicode_CheckExact(v) || !PyUnicode_IS_ASCII(v))
        return 0;
    size_t n = strlen(text);
    return (size_t)PyUnicode_GET_LENGTH(v) == n && memcmp(PyUnicode_1BYTE_DATA(v), text, n) == 0;
}

static int is_hex64(PyObject *v)
{
    if (!PyUnicode_CheckExact(v) || !PyUnicode_IS_ASCII(v) || PyUnicode_GET_LENGTH(v) != 64)
        return 0;
    const Py_UCS1 *d = PyUnicode_1BYTE_DATA(v);
    for (int i = 0; i < 64; i++)
        if (!((d[i] >= '0' && d[i] <= '9') || (d[i] >= 'a' && d[i] <= 'f')))
            return 0;
    return 1;
}

static int is_shard_char(Py_UCS1 c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_'
           || c == ':' || c == '-';
}

static int is_b64_char(Py_UCS1 c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* wire.signature_format_ok; ``alg`` is the sig_alg value or NULL (already checked). */
static int sig_format_ok(PyObject *sig, PyObject *alg)
{
    if (!PyUnicode_CheckExact(sig) || !PyUnicode_IS_ASCII(sig))
        return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(sig);
    const Py_UCS1 *d = PyUnicode_1BYTE_DATA(sig);
    if (n == 44 && !(alg != NULL && str_is(alg, "ed25519"))) {
        for (int i = 0; i < 42; i++)
            if (!is_b64_char(d[i]))
                return 0;
        return strchr("AEIMQUYcgkosw048", d[42]) != NULL && d[42] && d[43] == '=';
    }
    if (n == 88 && !(alg != NULL && str_is(alg, "hmac"))) {
        for (int i = 0; i < 85; i++)
            if (!is_b64_char(d[i]))
                return 0;
        return strchr("AQgw", d[85]) != NULL && d[85] && d[86] == '=' && d[87] == '=';
    }
    return 0;
}

/* An exact int in [lo, hi] (both within long long); 0 for anything else. */
static int int_in(PyObject *v, long long lo, long long hi, long long *out)
{
    if (!PyLong_CheckExact(v))
        return 0;
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || (x == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    if (out != NULL)
        *out = x;
    return lo <= x && x <= hi;
}

/* An exact int >= lo (any size above): 1; anything else 0. */
static int int_at_least(PyObject *v, long long lo)
{
    if (!PyLong_CheckExact(v))
        return 0;
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return overflow > 0 || (!overflow && x >= lo);
}

/* wire._fast_number with its value: a finite exact float, or an exact int within long long. */
static int number_value(PyObject *v, double *out)
{
    if (PyFloat_CheckExact(v)) {
        *out = PyFloat_AS_DOUBLE(v);
        return isfinite(*out);
    }
    long long x;
    if (int_in(v, LLONG_MIN, LLONG_MAX, &x)) {
        *out = (double)x; /* only compared with small bounds: exact enough for >= 0 and [-1, 1] */
        return 1;
    }
    return 0;
}

static int scales_and_counts_ok(PyObject *scales, PyObject *counts)
{
    if (!PyList_CheckExact(scales) || !PyDict_CheckExact(counts))
        return 0;
    Py_ssize_t n = PyList_GET_SIZE(scales);
    if (n < 2 || n > MAX_SCALES || PyDict_GET_SIZE(counts) != n)
        return 0;
    long long previous = 1, scale;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!int_in(PyList_GET_ITEM(scales, i), previous + 1, SCALE_MAX, &scale))
            return 0;
        char digits[24];
        int len = write_decimal(digits, scale);
        PyObject *key = PyUnicode_New(len, 127);
        if (key == NULL) {
            PyErr_Clear();
            return 0;
        }
        memcpy(PyUnicode_1BYTE_DATA(key), digits, (size_t)len);
        PyObject *count = PyDict_GetItemWithError(counts, key);
        Py_DECREF(key);
        if (count == NULL) {
            PyErr_Clear();
            return 0;
        }
        if (!int_at_least(count, 1))
            return 0;
        previous = scale;
    }
    return 1; /* n distinct scales, each a key, and n keys: the keys are exactly the scales */
}

static int direction_ok(PyObject *v)
{
    if (!PyList_CheckExact(v) || PyList_GET_SIZE(v) < 1 || PyList_GET_SIZE(v) > MAX_DIM)
        return 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v); i++) {
        double x;
        if (!number_value(PyList_GET_ITEM(v, i), &x) || !(-1.0 <= x && x <= 1.0))
            return 0;
    }
    return 1;
}

static int meta_ok(PyObject *v)
{
    if (!PyDict_CheckExact(v))
        return 0;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(v, &pos, &key, &value))
        if (!PyUnicode_CheckExact(value))
            return 0;
    return 1;
}

static int optional_ok(int k, PyObject *v, PyObject *version)
{
    double x;
    switch (k) {
    case K_SEED:
        if (!PyLong_CheckExact(v))
            return 0;
        (void)PyLong_AsUnsignedLongLong(v); /* negative or beyond 2^64-1: error */
        if (PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        return 1;
    case K_SIG_ALG:
        return str_is(v, "hmac") || (str_is(v, "ed25519") && !str_is(version, "0.1"));
    case K_ATTEMPT:
        return int_at_least(v, 0);
    case K_SENT_AT:
        if (PyUnicode_CheckExact(v))
            return PyUnicode_GET_LENGTH(v) <= 64;
        return number_value(v, &x) && x >= 0.0;
    case K_FT:
        return PyDict_CheckExact(v);
    case K_VRF_PROOF:
        return PyUnicode_CheckExact(v);
    case K_META:
        return meta_ok(v);
    }
    return 0;
}

static int scalars_ok(PyObject **f)
{
    double x;
    PyObject *shard = f[K_SHARD_ID];
    if (!is_hex64(f[K_PCS_ID]) || !is_hex64(f[K_MERKLE_ROOT]) || !str_is(f[K_SCHEMA], "fractal-lba-kakeya"))
        return 0;
    if (!(str_is(f[K_VERSION], "1") || str_is(f[K_VERSION], "0.1")))
        return 0;
    if (!(str_is(f[K_REGIME], "sticky") || str_is(f[K_REGIME], "mixed") || str_is(f[K_REGIME], "non_sticky")))
        return 0;
    if (!PyUnicode_CheckExact(shard) || !PyUnicode_IS_ASCII(shard) || PyUnicode_GET_LENGTH(shard) < 1
        || PyUnicode_GET_LENGTH(shard) > 128)
        return 0;
    for (Py_ssize_t i = 0; i < PyUnicode_GET_LENGTH(shard); i++)
        if (!is_shard_char(PyUnicode_1BYTE_DATA(shard)[i]))
            return 0;
    if (!int_in(f[K_EPOCH], 0, EPOCH_MAX, NULL) || !sig_format_ok(f[K_SIG], f[K_SIG_ALG]))
        return 0;
    return number_value(f[K_COH_STAR], &x) && number_value(f[K_D_HAT], &x) && number_value(f[K_R], &x)
           && number_value(f[K_BUDGET], &x);
}

/* 1: the pcs_id is SHA-256(merkle_root|epoch|shard_id); 0: it is not (inputs already checked). */
static int pcs_id_matches(PyObject **f)
{
    unsigned char pre[64 + 1 + 20 + 1 + 128], digest[SHA256_DIGEST_LENGTH];
    long long epoch = PyLong_AsLongLong(f[K_EPOCH]);
    Py_ssize_t shard_len = PyUnicode_GET_LENGTH(f[K_SHARD_ID]);
    memcpy(pre, PyUnicode_1BYTE_DATA(f[K_MERKLE_ROOT]), 64);
    pre[64] = '|';
    int n = 65 + write_decimal((char *)pre + 65, epoch);
    pre[n++] = '|';
    memcpy(pre + n, PyUnicode_1BYTE_DATA(f[K_SHARD_ID]), (size_t)shard_len);
    SHA256(pre, (size_t)(n + shard_len), digest);
    const Py_UCS1 *claimed = PyUnicode_1BYTE_DATA(f[K_PCS_ID]);
    static const char HEX[] = "0123456789abcdef";
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        if (claimed[2 * i] != HEX[digest[i] >> 4] || claimed[2 * i + 1] != HEX[digest[i] & 15])
            return 0;
    return 1;
}

PyDoc_STRVAR(pcs_check_doc,
"pcs_check(doc) -> int\n\n"
"1: doc passes every wire check of wire.validate_pcs; 2: every check but\n"
"INV-PCSID; 0: the reference validator must decide.");

static PyObject *pcs_check(PyObject *Py_UNUSED(module), PyObject *doc)
{
    if (!PyDict_CheckExact(doc))
        return PyLong_FromLong(0);
    PyObject *f[N_KNOWN];
    Py_ssize_t found = 0;
    for (int k = 0; k < N_KNOWN; k++) {
        f[k] = PyDict_GetItemWithError(doc, known_keys[k]); /* borrowed */
        if (f[k] == NULL) {
            if (PyErr_Occurred()) {
                PyErr_Clear();
                return PyLong_FromLong(0);
            }
            if (k < N_REQUIRED)
                return PyLong_FromLong(0);
            continue;
        }
        found++;
    }
    if (found != PyDict_GET_SIZE(doc)) /* an unknown field */
        return PyLong_FromLong(0);
    if (!scalars_ok(f) || !scales_and_counts_ok(f[K_SCALES], f[K_N_J]) || !direction_ok(f[K_V_STAR]))
        return PyLong_FromLong(0);
    for (int k = N_REQUIRED; k < N_KNOWN; k++)
        if (f[k] != NULL && !optional_ok(k, f[k], f[K_VERSION]))
            return PyLong_FromLong(0);
    return PyLong_FromLong(pcs_id_matches(f) ? 1 : 2);
}

/* ---- signals: Theil-Sen slope and round9 -------------------------------- */
#define TS_MAX_SCALES 16 /* 120 slopes; more go to the reference */

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
        if (!int_in(PyList_GET_ITEM(args[0], i), 1, SCALE_MAX, &scales[i])
            || !int_in(PyList_GET_ITEM(args[1], i), 1, 1LL << 53, &counts[i]))
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

/* ---- step 6: signal_check ----------------------------------------------- */
/* Verifier.check_signals for a PCS that passed step 3, with exact-float claims:
 * the same round9, Theil-Sen, clamps (max/min keep the first argument on ties),
 * budget evaluated left to right without fused multiply-add, regime tests in
 * order, and the same six reason tests. */
enum { P_TOL_D, P_TOL_COH, P_TOL_BUDGET, P_BASE, P_ALPHA, P_BETA, P_GAMMA, P_D0, P_STICKY_COH, P_STICKY_D_MAX,
       P_NON_STICKY_D_MIN, N_PARAMS };
static PyObject *regime_names[3]; /* sticky, mixed, non_sticky (interned) */

static double py_max0(double x) { return x > 0.0 ? x : 0.0; }          /* max(0.0, x) */
static double py_min1(double x) { return x < 1.0 ? x : 1.0; }          /* min(1.0, x) */

/* Exact-int counts of ``by_scale`` in scale order; 0: not the common case. */
static int counts_in_order(PyObject *scales, PyObject *by_scale, long long *s, long long *c, Py_ssize_t *n)
{
    if (!PyList_CheckExact(scales) || !PyDict_CheckExact(by_scale))
        return 0;
    *n = PyList_GET_SIZE(scales);
    if (*n < 2 || *n > TS_MAX_SCALES)
        return 0;
    for (Py_ssize_t i = 0; i < *n; i++) {
        if (!int_in(PyList_GET_ITEM(scales, i), 1, SCALE_MAX, &s[i]))
            return 0;
        char digits[24];
        int len = write_decimal(digits, s[i]);
        PyObject *key = PyUnicode_New(len, 127);
        if (key == NULL) {
            PyErr_Clear();
            return 0;
        }
        memcpy(PyUnicode_1BYTE_DATA(key), digits, (size_t)len);
        PyObject *count = PyDict_GetItemWithError(by_scale, key);
        Py_DECREF(key);
        if (count == NULL || !int_in(count, 1, 1LL << 53, &c[i])) {
            PyErr_Clear();
            return 0;
        }
    }
    return 1;
}

static int float_arg(PyObject *v, double *out)
{
    if (!PyFloat_CheckExact(v))
        return 0;
    *out = PyFloat_AS_DOUBLE(v);
    return 1;
}

PyDoc_STRVAR(signal_check_doc,
"signal_check(scales, N_j, coh_star, r, D_hat, budget, regime, legacy, params)\n"
"    -> (reason_bits, d_hat, budget, regime) | None\n\n"
"Step 6 of the pipeline for a PCS that passed step 3. params: 11 floats (tol_d,\n"
"tol_coh, tol_budget, base, alpha, beta, gamma, d0, sticky_coh, sticky_d_max,\n"
"non_sticky_d_min). Bit i of reason_bits is pipeline.REASON_CODES[i]. None: the\n"
"reference decides (claims that are not floats, large values, many scales, ...).");

static PyObject *signal_check(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    long long s[TS_MAX_SCALES], c[TS_MAX_SCALES];
    double p[N_PARAMS], coh_claim, r_claim, d_claim, budget_claim, d, coh, r, d_pub, budget_pub;
    Py_ssize_t n;
    if (nargs != 9 || !PyTuple_CheckExact(args[8]) || PyTuple_GET_SIZE(args[8]) != N_PARAMS)
        Py_RETURN_NONE;
    for (int i = 0; i < N_PARAMS; i++)
        if (!float_arg(PyTuple_GET_ITEM(args[8], i), &p[i]))
            Py_RETURN_NONE;
    int legacy = PyObject_IsTrue(args[7]);
    if (legacy < 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (!counts_in_order(args[0], args[1], s, c, &n) || !float_arg(args[2], &coh_claim) || !float_arg(args[3], &r_claim)
        || !float_arg(args[4], &d_claim) || !float_arg(args[5], &budget_claim))
        Py_RETURN_NONE;
    if (!theil_sen_core(s, c, n, legacy, &d) || !round9_core(d, &d) || !round9_core(coh_claim, &coh)
        || !round9_core(r_claim, &r) || !round9_core(d_claim, &d_pub) || !round9_core(budget_claim, &budget_pub))
        Py_RETURN_NONE;
    double coh_c = py_min1(py_max0(coh)), r_c = py_min1(py_max0(r));
    double value = p[P_BASE] + p[P_ALPHA] * (1.0 - r_c);
    value = value + p[P_BETA] * py_max0(d - p[P_D0]);
    value = value + p[P_GAMMA] * coh_c;
    double budget = py_min1(py_max0(value));
    int reg = coh_c >= p[P_STICKY_COH] && d <= p[P_STICKY_D_MAX] ? 0 : d >= p[P_NON_STICKY_D_MIN] ? 2 : 1;
    long bits = 0;
    if (fabs(d - d_pub) > p[P_TOL_D])
        bits |= 1;
    if (!(0.0 <= coh && coh <= 1.0 + p[P_TOL_COH]))
        bits |= 2;
    if (!(0.0 <= r && r <= 1.0))
        bits |= 4;
    for (Py_ssize_t i = 1; i < n; i++)
        if (c[i] < c[i - 1]) { /* counts != sorted(counts) */
            bits |= 8;
            break;
        }
    if (fabs(budget - budget_pub) > p[P_TOL_BUDGET])
        bits |= 16;
    int same_regime = PyUnicode_Check(args[6]) ? PyUnicode_Compare(args[6], regime_names[reg]) : 1;
    if (same_regime == -1 && PyErr_Occurred())
        return NULL;
    if (same_regime != 0)
        bits |= 32;
    return Py_BuildValue("(lddO)", bits, d, budget, regime_names[reg]);
}

/* ---- step 4: hmac_auth_v1 ----------------------------------------------- */
PyDoc_STRVAR(hmac_auth_v1_doc,
"hmac_auth_v1(doc, keys) -> str | False | None\n\n"
"Step 4 of the pipeline for profile v1 and an HMAC tenant, in one call: the hex\n"
"SHA-256 of the canonical bytes (the payload digest) if doc['sig'] is the strict\n"
"base64 HMAC-SHA256 of those bytes under one of ``keys`` (every key tried,\n"
"constant-time comparison), False if it is not, None when the pure path must\n"
"decide (canonical bytes not the common case, keys not non-empty exact bytes).");

static PyObject *hmac_auth_v1(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    static const char HEX[] = "0123456789abcdef";
    if (nargs != 2 || !PyDict_CheckExact(args[0]) || !PyList_CheckExact(args[1]))
        Py_RETURN_NONE;
    PyObject *keys = args[1];
    Py_ssize_t n = PyList_GET_SIZE(keys);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        if (!PyBytes_CheckExact(key) || PyBytes_GET_SIZE(key) == 0)
            Py_RETURN_NONE;
    }
    PyObject *sig = PyDict_GetItemWithError(args[0], known_keys[K_SIG]);
    if (sig == NULL) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    PyObject *msg = canonical_v1(NULL, args[0]);
    if (msg == NULL || msg == Py_None)
        return msg; /* an error, or None: not the common case */
    int match = 0;
    PyObject *raw = b64decode_canonical(NULL, sig);
    if (raw == NULL) {
        Py_DECREF(msg);
        return NULL;
    }
    if (raw != Py_None && PyBytes_GET_SIZE(raw) == SHA256_DIGEST_LENGTH) {
        unsigned char mac[SHA256_DIGEST_LENGTH];
        for (Py_ssize_t i = 0; i < n; i++) { /* every key is tried: timing does not reveal which matched */
            PyObject *key = PyList_GET_ITEM(keys, i);
            hmac_sha256((const unsigned char *)PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key),
                        (const unsigned char *)PyBytes_AS_STRING(msg), (size_t)PyBytes_GET_SIZE(msg), mac);
            match |= CRYPTO_memcmp(mac, PyBytes_AS_STRING(raw), SHA256_DIGEST_LENGTH) == 0;
        }
    }
    Py_DECREF(raw);
    if (!match) {
        Py_DECREF(msg);
        Py_RETURN_FALSE;
    }
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)PyBytes_AS_STRING(msg), (size_t)PyBytes_GET_SIZE(msg), digest);
    Py_DECREF(msg);
    PyObject *out = PyUnicode_New(2 * SHA256_DIGEST_LENGTH, 127);
    if (out == NULL)
        return NULL;
    Py_UCS1 *p = PyUnicode_1BYTE_DATA(out);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        *p++ = (Py_UCS1)HEX[digest[i] >> 4];
        *p++ = (Py_UCS1)HEX[digest[i] & 15];
    }
    return out;
}

/* ---- steps 3, 4 and 6 in one call: accept_v1 ------------------------------ */
PyDoc_STRVAR(accept_v1_doc,
"accept_v1(body, keys, params, parts) -> (pcs_id, digest, reason_bits, d_hat, budget, regime, answer) | None\n\n"
"Steps 3, 4 and 6 of the pipeline in one call, for the common case only: a body\n"
"parse_json takes, a document pcs_check accepts (INV-PCSID holds), version \"1\"\n"
"(profile v1), no sig_alg or sig_alg \"hmac\", a sig hmac_auth_v1 verifies under\n"
"one of keys, and claims signal_check takes (params as there). None: anything\n"
"else -- the caller runs the reference steps, which answer it. The caller checks\n"
"the tenant (HMAC, profile v1 allowed) and passes its active keys.\n"
"parts = (repr(first_seen), policy_version JSON, region JSON), ASCII str: answer is\n"
"the 200 body Verifier._body writes when reason_bits is 0, else None.");

/* Verifier._body for an accepted PCS (no reasons): None when round9 is not the common case */
static PyObject *accepted_body(PyObject *pcs_id, double d_hat, double budget, PyObject *regime, PyObject *parts)
{
    double d9, b9;
    if (!PyTuple_CheckExact(parts) || PyTuple_GET_SIZE(parts) != 3 || !round9_core(d_hat, &d9)
        || !round9_core(budget, &b9))
        Py_RETURN_NONE;
    for (int i = 0; i < 3; i++)
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(parts, i)) || !PyUnicode_IS_ASCII(PyTuple_GET_ITEM(parts, i)))
            Py_RETURN_NONE;
    if (!PyUnicode_IS_ASCII(pcs_id) || !PyUnicode_IS_ASCII(regime))
        Py_RETURN_NONE;
    char *ds = PyOS_double_to_string(d9, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    char *bs = ds == NULL ? NULL : PyOS_double_to_string(b9, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    PyObject *text = NULL;
    if (bs != NULL)
        text = PyUnicode_FromFormat(
            "{\"accepted\":true,\"escalated\":false,\"first_seen\":%U,\"pcs_id\":\"%U\",\"policy_version\":%U,"
            "\"reasons\":[],\"recomputed\":{\"D_hat\":%s,\"budget\":%s,\"regime\":\"%U\"},\"region\":%U}",
            PyTuple_GET_ITEM(parts, 0), pcs_id, PyTuple_GET_ITEM(parts, 1), ds, bs, regime, PyTuple_GET_ITEM(parts, 2));
    PyMem_Free(ds);
    PyMem_Free(bs);
    if (text == NULL)
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize((const char *)PyUnicode_1BYTE_DATA(text), PyUnicode_GET_LENGTH(text));
    Py_DECREF(text);
    return out;
}

static PyObject *accept_checked(PyObject *module, PyObject *doc, PyObject *keys, PyObject *params, PyObject *parts)
{
    PyObject *f[N_KNOWN];
    static const int NEEDED[] = {K_PCS_ID, K_VERSION, K_SCALES, K_N_J, K_COH_STAR, K_R, K_D_HAT, K_BUDGET, K_REGIME};
    for (size_t k = 0; k < sizeof NEEDED / sizeof NEEDED[0]; k++) {
        f[NEEDED[k]] = PyDict_GetItemWithError(doc, known_keys[NEEDED[k]]); /* borrowed */
        if (f[NEEDED[k]] == NULL) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
    }
    if (!str_is(f[K_VERSION], "1"))
        Py_RETURN_NONE;
    PyObject *alg = PyDict_GetItemWithError(doc, known_keys[K_SIG_ALG]);
    if (alg == NULL && PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (alg != NULL && !str_is(alg, "hmac"))
        Py_RETURN_NONE;
    PyObject *hargs[2] = {doc, keys};
    PyObject *digest = hmac_auth_v1(module, hargs, 2);
    if (digest == NULL || !PyUnicode_CheckExact(digest)) { /* an error, False or None */
        if (digest == NULL)
            return NULL;
        Py_DECREF(digest);
        Py_RETURN_NONE;
    }
    PyObject *sargs[9] = {f[K_SCALES], f[K_N_J], f[K_COH_STAR], f[K_R], f[K_D_HAT], f[K_BUDGET], f[K_REGIME],
                          Py_False, params};
    PyObject *checked = signal_check(module, sargs, 9);
    PyObject *out = checked;
    if (checked != NULL && checked != Py_None) {
        PyObject *bits = PyTuple_GET_ITEM(checked, 0), *answer = Py_None;
        Py_INCREF(answer);
        long nbits = PyLong_AsLong(bits);
        if (nbits == 0) {
            Py_DECREF(answer);
            answer = accepted_body(f[K_PCS_ID], PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(checked, 1)),
                                   PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(checked, 2)), PyTuple_GET_ITEM(checked, 3), parts);
        }
        out = answer == NULL ? NULL
                             : PyTuple_Pack(7, f[K_PCS_ID], digest, bits, PyTuple_GET_ITEM(checked, 1),
                                            PyTuple_GET_ITEM(checked, 2), PyTuple_GET_ITEM(checked, 3), answer);
        Py_XDECREF(answer);
        Py_DECREF(checked);
    }
    Py_DECREF(digest);
    return out;
}

static PyObject *accept_v1(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyList_CheckExact(args[1]) || PyList_GET_SIZE(args[1]) == 0)
        Py_RETURN_NONE;
    PyObject *parsed = parse_json(module, args[0]);
    if (parsed == NULL || parsed == Py_None)
        return parsed;
    PyObject *doc = PyTuple_GET_ITEM(parsed, 0);
    PyObject *out = NULL;
    PyObject *verdict = pcs_check(module, doc);
    if (verdict != NULL) {
        long v = PyLong_AsLong(verdict);
        Py_DECREF(verdict);
        if (v == 1) {
            out = accept_checked(module, doc, args[1], args[2], args[3]);
        } else {
            out = Py_None;
            Py_INCREF(out);
        }
    }
    Py_DECREF(parsed);
    return out;
}

/* ---- module ----------------------------------------------------------- */

static PyMethodDef fastcore_methods[] = {
    {"canonical_v1", (PyCFunction)canonical_v1, METH_O, canonical_v1_doc},
    {"hmac_sha256_b64", (PyCFunction)(void (*)(void))hmac_sha256_b64, METH_FASTCALL, hmac_sha256_b64_doc},
    {"hmac_sha256_any", (PyCFunction)(void (*)(void))hmac_sha256_any, METH_FASTCALL, hmac_sha256_any_doc},
    {"b64decode_canonical", (PyCFunction)b64decode_canonical, METH_O, b64decode_canonical_doc},
    {"parse_json", (PyCFunction)parse_json, METH_O, parse_json_doc},
    {"pcs_check", (PyCFunction)pcs_check, METH_O, pcs_check_doc},
    {"theil_sen", (PyCFunction)(void (*)(void))theil_sen, METH_FASTCALL, theil_sen_doc},
    {"round9", (PyCFunction)round9, METH_O, round9_doc},
    {"signal_check", (PyCFunction)(void (*)(void))signal_check, METH_FASTCALL, signal_check_doc},
    {"hmac_auth_v1", (PyCFunction)(void (*)(void))hmac_auth_v1, METH_FASTCALL, hmac_auth_v1_doc},
    {"accept_v1", (PyCFunction)(void (*)(void))accept_v1, METH_FASTCALL, accept_v1_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastcore_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_fastcore",
    .m_doc = "Compiled fast path of canonical bytes (profile v1), HMAC-SHA256 and strict base64.",
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
    static const char *REGIMES[3] = {"sticky", "mixed", "non_sticky"};
    for (int k = 0; k < 3; k++) {
        if (regime_names[k] == NULL) {
            regime_names[k] = PyUnicode_InternFromString(REGIMES[k]);
            if (regime_names[k] == NULL)
                return NULL;
        }
    }
    for (int k = 0; k < N_KNOWN; k++) {
        if (known_keys[k] == NULL) {
            known_keys[k] = PyUnicode_InternFromString(KNOWN_NAMES[k]);
            if (known_keys[k] == NULL)
                return NULL;
        }
    }
    return PyModule_Create(&fastcore_module);
}
