/* Compiled fast path of the verify pipeline: strict JSON, the PCS wire rules,
 * step 4 (HMAC, profile v1), step 6 (signals) and the accept path with its 200 body;
 * the verification core's batch loop (accept_batch, reading the common case off the body
 * without a dict: accept_scan) and its WAL framing (frame_records).
 *
 * Why this file exists: the verifier's hot loop parses, validates, authenticates
 * and checks the signals of every submission; in pure Python most of that time is
 * interpreter overhead. The readable modules wire.py and pipeline.py stay the
 * reference and the oracle of the differential tests (each function here is an
 * entry of the registry flk.impl.core.accel, registered by accelerated.py, which
 * names its test); this module takes only the common case and answers None for
 * anything else, so the caller runs the reference, which writes every error.
 *
 * It builds on the core's compiled module (canonical bytes, HMAC-SHA256, strict
 * base64, round9, Theil-Sen) through the table of ../core/_fastcore.h -- the
 * verifier may use the core, never the other way round. The wire limits, field
 * names, regimes and reason codes come from the generated _fastverify_constants.h
 * (scripts/gen_c_constants.py renders it from wire.py and pipeline.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>

#include "../core/_fastcore.h"
#include "_fastverify_constants.h"

_Static_assert(WIRE_U64_MAX == ULLONG_MAX, "the seed check relies on PyLong_AsUnsignedLongLong's range");

static const flk_core_api *core; /* the core's compiled functions (set by the module's init) */
static const char *REGIME_TEXT[N_REGIMES] = REGIME_NAMES_INIT;

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

/* The end of the JSON number token at p (RFC 8259 grammar; "1." and "1e" are errors), or NULL;
   *is_float: it has a fraction or an exponent. The one number grammar of this file. */
static const unsigned char *number_end(const unsigned char *p, const unsigned char *end, int *is_float)
{
    *is_float = 0;
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
        *is_float = 1;
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
        *is_float = 1;
    }
    return p;
}

static PyObject *json_number(json_parser *jp)
{
    const unsigned char *start = jp->p;
    int is_float;
    const unsigned char *p = number_end(start, jp->end, &is_float);
    if (p == NULL)
        return NULL;
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
    if (core->decimal_fast(buf, n, &v))
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
static const char *KNOWN_NAMES[N_KNOWN] = KNOWN_NAMES_INIT; /* K_* and N_KNOWN: _fastverify_constants.h */
static PyObject *known_keys[N_KNOWN];

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
    if (n > KNOWN_MAX_LENGTH || n < KNOWN_MIN_LENGTH)
        return NULL;
    static const unsigned char LENGTHS[N_KNOWN] = KNOWN_LENGTHS_INIT;
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
    if (n == 44 && !(alg != NULL && str_is(alg, WIRE_ALG_ED25519))) {
        for (int i = 0; i < 42; i++)
            if (!is_b64_char(d[i]))
                return 0;
        return strchr("AEIMQUYcgkosw048", d[42]) != NULL && d[42] && d[43] == '=';
    }
    if (n == 88 && !(alg != NULL && str_is(alg, WIRE_ALG_HMAC))) {
        for (int i = 0; i < 85; i++)
            if (!is_b64_char(d[i]))
                return 0;
        return strchr("AQgw", d[85]) != NULL && d[85] && d[86] == '=' && d[87] == '=';
    }
    return 0;
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
    if (flk_int_in(v, LLONG_MIN, LLONG_MAX, &x)) {
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
    if (n < 2 || n > WIRE_MAX_SCALES || PyDict_GET_SIZE(counts) != n)
        return 0;
    long long previous = 1, scale;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!flk_int_in(PyList_GET_ITEM(scales, i), previous + 1, WIRE_SCALE_MAX, &scale))
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
    if (!PyList_CheckExact(v) || PyList_GET_SIZE(v) < 1 || PyList_GET_SIZE(v) > WIRE_MAX_DIM)
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
        (void)PyLong_AsUnsignedLongLong(v); /* negative or beyond WIRE_U64_MAX: error */
        if (PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        return 1;
    case K_SIG_ALG:
        return str_is(v, WIRE_ALG_HMAC) || (str_is(v, WIRE_ALG_ED25519) && !str_is(version, WIRE_VERSION_LEGACY));
    case K_ATTEMPT:
        return int_at_least(v, 0);
    case K_SENT_AT:
        if (PyUnicode_CheckExact(v))
            return PyUnicode_GET_LENGTH(v) <= WIRE_SENT_AT_MAX;
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
    if (!is_hex64(f[K_PCS_ID]) || !is_hex64(f[K_MERKLE_ROOT]) || !str_is(f[K_SCHEMA], WIRE_SCHEMA_NAME))
        return 0;
    if (!(str_is(f[K_VERSION], WIRE_VERSION_V1) || str_is(f[K_VERSION], WIRE_VERSION_LEGACY)))
        return 0;
    int regime_ok = 0;
    for (int k = 0; k < N_REGIMES; k++)
        regime_ok |= str_is(f[K_REGIME], REGIME_TEXT[k]);
    if (!regime_ok)
        return 0;
    if (!PyUnicode_CheckExact(shard) || !PyUnicode_IS_ASCII(shard) || PyUnicode_GET_LENGTH(shard) < 1
        || PyUnicode_GET_LENGTH(shard) > WIRE_SHARD_ID_MAX)
        return 0;
    for (Py_ssize_t i = 0; i < PyUnicode_GET_LENGTH(shard); i++)
        if (!is_shard_char(PyUnicode_1BYTE_DATA(shard)[i]))
            return 0;
    if (!flk_int_in(f[K_EPOCH], 0, WIRE_EPOCH_MAX, NULL) || !sig_format_ok(f[K_SIG], f[K_SIG_ALG]))
        return 0;
    return number_value(f[K_COH_STAR], &x) && number_value(f[K_D_HAT], &x) && number_value(f[K_R], &x)
           && number_value(f[K_BUDGET], &x);
}

/* 1: the pcs_id is SHA-256(merkle_root|epoch|shard_id); 0: it is not (inputs already checked). */
static int pcs_id_matches(PyObject **f)
{
    unsigned char pre[64 + 1 + 20 + 1 + WIRE_SHARD_ID_MAX], digest[SHA256_DIGEST_LENGTH];
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

/* ---- step 6: signal_check ----------------------------------------------- */
/* Verifier.check_signals for a PCS that passed step 3, with exact-float claims:
 * the same round9, Theil-Sen, clamps (max/min keep the first argument on ties),
 * budget evaluated left to right without fused multiply-add, regime tests in
 * order, and the same six reason tests. */
enum { P_TOL_D, P_TOL_COH, P_TOL_BUDGET, P_BASE, P_ALPHA, P_BETA, P_GAMMA, P_D0, P_STICKY_COH, P_STICKY_D_MAX,
       P_NON_STICKY_D_MIN, N_PARAMS };
static PyObject *regime_names[N_REGIMES]; /* wire.REGIMES (interned) */

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
        if (!flk_int_in(PyList_GET_ITEM(scales, i), 1, TS_SCALE_MAX, &s[i]))
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
        if (count == NULL || !flk_int_in(count, 1, 1LL << 53, &c[i])) {
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

/* The 11 float parameters of step 6 (signal_check's params); 0: not exact floats. */
static int signal_params(PyObject *params, double *p)
{
    if (!PyTuple_CheckExact(params) || PyTuple_GET_SIZE(params) != N_PARAMS)
        return 0;
    for (int i = 0; i < N_PARAMS; i++)
        if (!float_arg(PyTuple_GET_ITEM(params, i), &p[i]))
            return 0;
    return 1;
}

/* The arithmetic of step 6 on exact values (signal_check and accept_scan share it): the reason
 * bits but the regime's, the recomputed D-hat, budget and regime; -1: not the common case. */
static long signal_bits(const long long *s, const long long *c, Py_ssize_t n, int legacy, double coh_claim,
                        double r_claim, double d_claim, double budget_claim, const double *p, double *d_out,
                        double *budget_out, int *reg_out)
{
    double d, coh, r, d_pub, budget_pub;
    if (!core->theil_sen(s, c, n, legacy, &d) || !core->round9(d, &d) || !core->round9(coh_claim, &coh)
        || !core->round9(r_claim, &r) || !core->round9(d_claim, &d_pub) || !core->round9(budget_claim, &budget_pub))
        return -1;
    double coh_c = py_min1(py_max0(coh)), r_c = py_min1(py_max0(r));
    double value = p[P_BASE] + p[P_ALPHA] * (1.0 - r_c);
    value = value + p[P_BETA] * py_max0(d - p[P_D0]);
    value = value + p[P_GAMMA] * coh_c;
    double budget = py_min1(py_max0(value));
    int reg = coh_c >= p[P_STICKY_COH] && d <= p[P_STICKY_D_MAX] ? REGIME_STICKY
              : d >= p[P_NON_STICKY_D_MIN]                   ? REGIME_NON_STICKY
                                                              : REGIME_MIXED;
    long bits = 0;
    if (fabs(d - d_pub) > p[P_TOL_D])
        bits |= REASON_D_HAT_MISMATCH;
    if (!(0.0 <= coh && coh <= 1.0 + p[P_TOL_COH]))
        bits |= REASON_COH_OUT_OF_BOUNDS;
    if (!(0.0 <= r && r <= 1.0))
        bits |= REASON_R_OUT_OF_BOUNDS;
    for (Py_ssize_t i = 1; i < n; i++)
        if (c[i] < c[i - 1]) { /* counts != sorted(counts) */
            bits |= REASON_N_J_DECREASING;
            break;
        }
    if (fabs(budget - budget_pub) > p[P_TOL_BUDGET])
        bits |= REASON_BUDGET_MISMATCH;
    *d_out = d;
    *budget_out = budget;
    *reg_out = reg;
    return bits;
}

static PyObject *signal_check(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    long long s[TS_MAX_SCALES], c[TS_MAX_SCALES];
    double p[N_PARAMS], coh_claim, r_claim, d_claim, budget_claim, d, budget;
    Py_ssize_t n;
    int reg;
    if (nargs != 9 || !signal_params(args[8], p))
        Py_RETURN_NONE;
    int legacy = PyObject_IsTrue(args[7]);
    if (legacy < 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (!counts_in_order(args[0], args[1], s, c, &n) || !float_arg(args[2], &coh_claim) || !float_arg(args[3], &r_claim)
        || !float_arg(args[4], &d_claim) || !float_arg(args[5], &budget_claim))
        Py_RETURN_NONE;
    long bits = signal_bits(s, c, n, legacy, coh_claim, r_claim, d_claim, budget_claim, p, &d, &budget, &reg);
    if (bits < 0)
        Py_RETURN_NONE;
    int same_regime = PyUnicode_Check(args[6]) ? PyUnicode_Compare(args[6], regime_names[reg]) : 1;
    if (same_regime == -1 && PyErr_Occurred())
        return NULL;
    if (same_regime != 0)
        bits |= REASON_REGIME_MISMATCH;
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
    PyObject *msg = core->canonical_v1(args[0]);
    if (msg == NULL || msg == Py_None)
        return msg; /* an error, or None: not the common case */
    int match = 0;
    PyObject *raw = core->b64decode_canonical(sig);
    if (raw == NULL) {
        Py_DECREF(msg);
        return NULL;
    }
    if (raw != Py_None && PyBytes_GET_SIZE(raw) == SHA256_DIGEST_LENGTH) {
        unsigned char mac[SHA256_DIGEST_LENGTH];
        for (Py_ssize_t i = 0; i < n; i++) { /* every key is tried: timing does not reveal which matched */
            PyObject *key = PyList_GET_ITEM(keys, i);
            core->hmac_sha256((const unsigned char *)PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key),
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
    if (!PyTuple_CheckExact(parts) || PyTuple_GET_SIZE(parts) != 3 || !core->round9(d_hat, &d9)
        || !core->round9(budget, &b9))
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
    if (!str_is(f[K_VERSION], WIRE_VERSION_V1))
        Py_RETURN_NONE;
    PyObject *alg = PyDict_GetItemWithError(doc, known_keys[K_SIG_ALG]);
    if (alg == NULL && PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (alg != NULL && !str_is(alg, WIRE_ALG_HMAC))
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

/* A planted bug for the quality test (tests/verifier/test_batch_differential.py builds
 * this file with -DFLK_PLANTED_BUG=1, 2, 3 or 4 and checks that the differential tests catch
 * it); never defined in a real build. */
#ifndef FLK_PLANTED_BUG
#define FLK_PLANTED_BUG 0
#endif

/* ---- the common path without a dict: accept_scan ------------------------- */
/* accept_v1 read straight off the body's bytes: the fields are bound where they lie
 * (spans of the body, numbers converted as parse_json converts them) and checked with
 * the rules of pcs_check; the signed subset's canonical bytes are written from them
 * into a stack buffer for the HMAC and the payload digest; step 6 runs on the bound
 * values (signal_bits, shared with signal_check). No dict, no str or float object is
 * built per field: only the answer's. The scanner is stricter than parse_json (only
 * printable-ASCII strings without escapes, nesting up to SCAN_MAX_DEPTH, at most
 * SCAN_MAX_KEYS keys in a nested object, claims written as floats, ...): whatever it
 * does not take it gives up on, and accept_v1 (the dict path) decides the body. */
#define SCAN_MAX_DEPTH 8
#define SCAN_MAX_KEYS 16

typedef struct {
    const unsigned char *p;
    Py_ssize_t n;
} span;

typedef struct {
    const unsigned char *p, *end;
} scanner;

typedef struct {
    unsigned long present; /* bit k: field k was seen */
    span text[N_KNOWN];    /* string fields: their characters */
    double coh, d_hat, r, budget;
    long long epoch;
    long long s[TS_MAX_SCALES], c[TS_MAX_SCALES];
    Py_ssize_t n_scales, n_counts;
    span count_keys[TS_MAX_SCALES];
    long long counts[TS_MAX_SCALES];
    int regime;
} scanned;

static inline void scan_ws(scanner *sc)
{
    while (sc->p < sc->end && (*sc->p == ' ' || *sc->p == '\t' || *sc->p == '\n' || *sc->p == '\r'))
        sc->p++;
}

static inline int scan_char(scanner *sc, unsigned char c)
{
    scan_ws(sc);
    if (sc->p < sc->end && *sc->p == c) {
        sc->p++;
        scan_ws(sc);
        return 1;
    }
    return 0;
}

/* A string of printable ASCII without escapes at sc->p (its opening quote); 0: give up. */
static int scan_string(scanner *sc, span *out)
{
    if (!(sc->p < sc->end && *sc->p == '"'))
        return 0;
    const unsigned char *start = sc->p + 1, *p = start, *end = sc->end;
    while (p < end && *p != '"') {
        if (*p < 0x20 || *p >= 0x80 || *p == '\\')
            return 0;
        p++;
    }
    if (p == end)
        return 0;
    out->p = start;
    out->n = p - start;
    sc->p = p + 1;
    return 1;
}

/* A number token as json_number reads it: 1 an int, 2 a float (fraction or exponent), 0 give up. */
static int scan_number(scanner *sc, span *out)
{
    const unsigned char *start = sc->p;
    int is_float;
    const unsigned char *p = number_end(start, sc->end, &is_float);
    if (p == NULL || p - start > JSON_MAX_NUMBER)
        return 0;
    out->p = start;
    out->n = p - start;
    sc->p = p;
    return is_float ? 2 : 1;
}

/* float(token) of a float token, as json_number converts it; 0: not finite (parse_json gives up). */
static int span_double(span t, double *out)
{
    char buf[JSON_MAX_NUMBER + 1];
    memcpy(buf, t.p, (size_t)t.n);
    buf[t.n] = '\0';
    if (core->decimal_fast(buf, t.n, out))
        return 1;
    char *stop = NULL;
    *out = PyOS_string_to_double(buf, &stop, NULL);
    if ((*out == -1.0 && PyErr_Occurred()) || stop != buf + t.n || !isfinite(*out)) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* int(token) of an int token of at most 18 characters; 0: longer (the dict path decides). */
static int span_int(span t, long long *out)
{
    if (t.n > 18)
        return 0;
    int neg = t.p[0] == '-';
    long long v = 0;
    for (Py_ssize_t i = neg; i < t.n; i++)
        v = v * 10 + (t.p[i] - '0');
    *out = neg ? -v : v;
    return 1;
}

/* A non-negative int token within [lo, hi]: its value; 0: anything else. */
static int scan_uint(scanner *sc, long long lo, long long hi, long long *out)
{
    span t;
    long long v;
    if (scan_number(sc, &t) != 1 || t.p[0] == '-' || !span_int(t, &v) || v < lo || v > hi)
        return 0;
    if (out != NULL)
        *out = v;
    return 1;
}

/* A number for number_value (a finite float, or an int within long long): its value; 0: give up. */
static int scan_real(scanner *sc, double *out)
{
    span t;
    long long v;
    int kind = scan_number(sc, &t);
    if (kind == 2)
        return span_double(t, out);
    if (kind == 1 && span_int(t, &v)) {
        *out = (double)v;
        return 1;
    }
    return 0;
}

static int scan_value(scanner *sc, int depth);

/* An object (sc->p at its '{') whose keys are distinct; strings_only: every value a string. */
static int scan_object(scanner *sc, int depth, int strings_only)
{
    span keys[SCAN_MAX_KEYS], key, value;
    int n = 0;
    if (depth > SCAN_MAX_DEPTH || !scan_char(sc, '{'))
        return 0;
    if (scan_char(sc, '}'))
        return 1;
    for (;;) {
        if (n == SCAN_MAX_KEYS || !scan_string(sc, &key))
            return 0;
        for (int i = 0; i < n; i++)
            if (keys[i].n == key.n && memcmp(keys[i].p, key.p, (size_t)key.n) == 0)
                return 0; /* a duplicate key: parse_json gives up */
        keys[n++] = key;
        if (!scan_char(sc, ':'))
            return 0;
        if (strings_only ? !scan_string(sc, &value) : !scan_value(sc, depth))
            return 0;
        if (scan_char(sc, ','))
            continue;
        return scan_char(sc, '}');
    }
}

/* Any JSON value parse_json takes (within the scanner's limits). */
static int scan_value(scanner *sc, int depth)
{
    span t;
    double x;
    if (sc->p >= sc->end)
        return 0;
    switch (*sc->p) {
    case '{':
        return scan_object(sc, depth + 1, 0);
    case '[':
        if (depth + 1 > SCAN_MAX_DEPTH || !scan_char(sc, '['))
            return 0;
        if (scan_char(sc, ']'))
            return 1;
        for (;;) {
            if (!scan_value(sc, depth + 1))
                return 0;
            if (scan_char(sc, ','))
                continue;
            return scan_char(sc, ']');
        }
    case '"':
        return scan_string(sc, &t);
    case 't':
    case 'f':
    case 'n': {
        const char *word = *sc->p == 't' ? "true" : *sc->p == 'f' ? "false" : "null";
        size_t n = strlen(word);
        if ((size_t)(sc->end - sc->p) < n || memcmp(sc->p, word, n) != 0)
            return 0;
        sc->p += n;
        return 1;
    }
    default: {
        int kind = scan_number(sc, &t);
        return kind == 1 || (kind == 2 && span_double(t, &x));
    }
    }
}

static int span_is(span t, const char *text)
{
    size_t n = strlen(text);
    return (size_t)t.n == n && memcmp(t.p, text, n) == 0;
}

static int span_hex64(span t)
{
    if (t.n != 64)
        return 0;
    for (int i = 0; i < 64; i++)
        if (!((t.p[i] >= '0' && t.p[i] <= '9') || (t.p[i] >= 'a' && t.p[i] <= 'f')))
            return 0;
    return 1;
}

/* The value of field k (sc->p at it) into ``o``; 0: give up. */
static int scan_field(scanner *sc, int k, scanned *o)
{
    span t;
    double x;
    switch (k) {
    case K_EPOCH:
        return scan_uint(sc, 0, WIRE_EPOCH_MAX, &o->epoch);
    case K_COH_STAR:
    case K_D_HAT:
    case K_R:
    case K_BUDGET: { /* exact floats only: signal_check takes nothing else */
        double *to = k == K_COH_STAR ? &o->coh : k == K_D_HAT ? &o->d_hat : k == K_R ? &o->r : &o->budget;
        return scan_number(sc, &t) == 2 && span_double(t, to);
    }
    case K_SCALES: {
        long long previous = 1;
        if (!scan_char(sc, '['))
            return 0;
        for (o->n_scales = 0;; previous = o->s[o->n_scales++]) {
            if (o->n_scales == TS_MAX_SCALES || !scan_uint(sc, previous + 1, WIRE_SCALE_MAX, &o->s[o->n_scales]))
                return 0;
            if (!scan_char(sc, ',')) {
                o->n_scales++;
                return scan_char(sc, ']') && o->n_scales >= 2;
            }
        }
    }
    case K_N_J:
        if (!scan_char(sc, '{'))
            return 0;
        for (o->n_counts = 0;; o->n_counts++) {
            if (o->n_counts == TS_MAX_SCALES || !scan_string(sc, &o->count_keys[o->n_counts]) || !scan_char(sc, ':')
                || !scan_uint(sc, 1, 1LL << 53, &o->counts[o->n_counts]))
                return 0;
            if (!scan_char(sc, ',')) {
                o->n_counts++;
                return scan_char(sc, '}');
            }
        }
    case K_V_STAR: {
        int n = 0;
        if (!scan_char(sc, '['))
            return 0;
        for (;;) {
            if (++n > WIRE_MAX_DIM || !scan_real(sc, &x) || !(-1.0 <= x && x <= 1.0))
                return 0;
            if (!scan_char(sc, ','))
                return scan_char(sc, ']');
        }
    }
    case K_SEED: { /* an int in [0, WIRE_U64_MAX]: its digits compared with the bound's */
        char bound[24];
        int bound_n = snprintf(bound, sizeof bound, "%llu", (unsigned long long)WIRE_U64_MAX);
        if (scan_number(sc, &t) != 1 || t.p[0] == '-')
            return 0;
        return t.n < bound_n || (t.n == bound_n && memcmp(t.p, bound, (size_t)bound_n) <= 0);
    }
    case K_ATTEMPT:
        return scan_number(sc, &t) == 1 && t.p[0] != '-';
    case K_SENT_AT:
        if (sc->p < sc->end && *sc->p == '"')
            return scan_string(sc, &t) && t.n <= WIRE_SENT_AT_MAX;
        return scan_real(sc, &x) && x >= 0.0;
    case K_FT:
        return sc->p < sc->end && *sc->p == '{' && scan_object(sc, 2, 0);
    case K_META:
        return sc->p < sc->end && *sc->p == '{' && scan_object(sc, 2, 1);
    default: /* a string field */
        return scan_string(sc, &o->text[k]);
    }
}

/* Top-level key -> field index; -1: not a PCS field. */
static int known_index(span key)
{
    if (key.n > KNOWN_MAX_LENGTH || key.n < KNOWN_MIN_LENGTH)
        return -1;
    static const unsigned char LENGTHS[N_KNOWN] = KNOWN_LENGTHS_INIT;
    for (int k = 0; k < N_KNOWN; k++)
        if (LENGTHS[k] == key.n && KNOWN_NAMES[k][0] == key.p[0] && memcmp(KNOWN_NAMES[k], key.p, (size_t)key.n) == 0)
            return k;
    return -1;
}

/* The body as a v1 PCS that passes pcs_check with INV-PCSID, claims as floats, sig_alg absent
 * or "hmac", a 44-character signature: 1 and ``o``; 0: give up. */
static int scan_pcs(const unsigned char *body, Py_ssize_t len, scanned *o)
{
    scanner sc = {body, body + len};
    span key;
    o->present = 0;
    if (!scan_char(&sc, '{'))
        return 0;
    if (sc.p < sc.end && *sc.p == '}')
        return 0;
    for (;;) {
        if (!scan_string(&sc, &key))
            return 0;
        int k = known_index(key);
        if (k < 0)
            return 0; /* an unknown field: pcs_check refuses it */
#if FLK_PLANTED_BUG != 3
        if (o->present >> k & 1)
            return 0; /* a duplicate key: parse_json gives up */
#endif
        o->present |= 1UL << k;
        if (!scan_char(&sc, ':') || !scan_field(&sc, k, o))
            return 0;
        if (scan_char(&sc, ','))
            continue;
        if (!scan_char(&sc, '}') || sc.p != sc.end)
            return 0;
        break;
    }
    if ((o->present & ((1UL << N_REQUIRED) - 1)) != (1UL << N_REQUIRED) - 1)
        return 0;
    /* the string fields pcs_check and accept_checked look at */
    span shard = o->text[K_SHARD_ID], sig = o->text[K_SIG];
    if (!span_hex64(o->text[K_PCS_ID]) || !span_hex64(o->text[K_MERKLE_ROOT])
        || !span_is(o->text[K_SCHEMA], WIRE_SCHEMA_NAME) || !span_is(o->text[K_VERSION], WIRE_VERSION_V1))
        return 0;
    if ((o->present >> K_SIG_ALG & 1) && !span_is(o->text[K_SIG_ALG], WIRE_ALG_HMAC))
        return 0;
    o->regime = -1;
    for (int k = 0; k < N_REGIMES; k++)
        if (span_is(o->text[K_REGIME], REGIME_TEXT[k]))
            o->regime = k;
    if (o->regime < 0 || shard.n < 1 || shard.n > WIRE_SHARD_ID_MAX)
        return 0;
    for (Py_ssize_t i = 0; i < shard.n; i++)
        if (!is_shard_char(shard.p[i]))
            return 0;
    if (sig.n != 44 || sig.p[43] != '=' || !strchr("AEIMQUYcgkosw048", sig.p[42]) || !sig.p[42])
        return 0;
    for (int i = 0; i < 42; i++)
        if (!is_b64_char(sig.p[i]))
            return 0;
    /* N_j's keys are exactly the scales' decimals (n distinct keys, each a scale's) */
    if (o->n_counts != o->n_scales)
        return 0;
    for (Py_ssize_t i = 0; i < o->n_scales; i++) {
        char digits[24];
        int n = write_decimal(digits, o->s[i]), found = 0;
        for (Py_ssize_t j = 0; j < o->n_counts; j++) {
            span ck = o->count_keys[j];
            if (ck.n == n && memcmp(ck.p, digits, (size_t)n) == 0) {
                if (found)
                    return 0; /* a duplicate key */
                o->c[i] = o->counts[j];
                found = 1;
            }
        }
        if (!found)
            return 0;
    }
    /* INV-PCSID: pcs_id == SHA-256(merkle_root|epoch|shard_id) */
    unsigned char pre[64 + 1 + 20 + 1 + WIRE_SHARD_ID_MAX], digest[SHA256_DIGEST_LENGTH];
    memcpy(pre, o->text[K_MERKLE_ROOT].p, 64);
    pre[64] = '|';
    int n = 65 + write_decimal((char *)pre + 65, o->epoch);
    pre[n++] = '|';
    memcpy(pre + n, shard.p, (size_t)shard.n);
    SHA256(pre, (size_t)(n + shard.n), digest);
    static const char HEX[] = "0123456789abcdef";
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        if (o->text[K_PCS_ID].p[2 * i] != HEX[digest[i] >> 4] || o->text[K_PCS_ID].p[2 * i + 1] != HEX[digest[i] & 15])
            return 0;
    return 1;
}

/* format(v, ".9f") as the core's canonical bytes write it (a value that rounds to zero is
 * 0.000000000); the length, 0 on an error or when it does not fit. */
static int write_fixed9(char *out, size_t room, double v)
{
    char *text = PyOS_double_to_string(v, 'f', 9, 0, NULL);
    if (text == NULL) {
        PyErr_Clear();
        return 0;
    }
    const char *from = strcmp(text, "-0.000000000") == 0 ? text + 1 : text;
    size_t n = strlen(from);
    if (n >= room)
        n = 0;
    else
        memcpy(out, from, n);
    PyMem_Free(text);
    return (int)n;
}

#define CANON_ROOM 2048 /* the canonical bytes of a scanned PCS: 4 floats of at most 320 characters and the rest */
#define CANON_TAIL 400   /* room kept after a float for every field that may follow it */

/* The v1 canonical bytes of the scanned PCS's signed subset into ``out``; the length, 0: give up. */
static size_t scanned_canonical(const scanned *o, char *out)
{
    const double floats[4] = {o->d_hat, o->budget, o->coh, o->r};
    static const char *const NAMES[4] = {"{\"D_hat\":", ",\"budget\":", ",\"coh_star\":", ",\"r\":"};
    char *p = out, *end = out + CANON_ROOM;
    for (int i = 0; i < 4; i++) {
        if (i == 3) { /* epoch, merkle_root and pcs_id sort before r */
            p += sprintf(p, ",\"epoch\":");
            p += write_decimal(p, o->epoch);
            p += sprintf(p, ",\"merkle_root\":\"");
            memcpy(p, o->text[K_MERKLE_ROOT].p, 64);
            p += 64;
            p += sprintf(p, "\",\"pcs_id\":\"");
            memcpy(p, o->text[K_PCS_ID].p, 64);
            p += 64;
            *p++ = '"';
        }
        p += sprintf(p, "%s", NAMES[i]);
        int n = end - p > CANON_TAIL ? write_fixed9(p, (size_t)(end - p - CANON_TAIL), floats[i]) : 0;
        if (n == 0)
            return 0;
        p += n;
    }
    p += sprintf(p, ",\"shard_id\":\"");
    memcpy(p, o->text[K_SHARD_ID].p, (size_t)o->text[K_SHARD_ID].n);
    p += o->text[K_SHARD_ID].n;
    *p++ = '"';
    *p++ = '}';
    return (size_t)(p - out);
}

/* 1: the sig (checked by scan_pcs) is the HMAC-SHA256 of msg under one of keys (every key tried,
 * constant-time comparison). */
static int scanned_hmac_ok(span sig, const char *msg, size_t msg_len, PyObject *keys)
{
    static signed char value[256];
    static int ready = 0;
    if (!ready) {
        memset(value, -1, sizeof value);
        for (int i = 0; i < 64; i++)
            value[(unsigned char)"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[i]] = (signed char)i;
        ready = 1;
    }
    unsigned char raw[33], mac[SHA256_DIGEST_LENGTH];
    for (int i = 0, w = 0; i < 44; i += 4) { /* 44 characters, the last one '=': 32 bytes */
        unsigned v = (unsigned)value[sig.p[i]] << 18 | (unsigned)value[sig.p[i + 1]] << 12
                     | (unsigned)value[sig.p[i + 2]] << 6 | (unsigned)(i + 3 < 43 ? value[sig.p[i + 3]] : 0);
        raw[w++] = (unsigned char)(v >> 16);
        raw[w++] = (unsigned char)(v >> 8);
        if (w < 33)
            raw[w++] = (unsigned char)v;
    }
    int match = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        core->hmac_sha256((const unsigned char *)PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key),
                          (const unsigned char *)msg, msg_len, mac);
        match |= CRYPTO_memcmp(mac, raw, SHA256_DIGEST_LENGTH) == 0;
    }
    return match;
}

/* 1: keys is a non-empty list of non-empty exact bytes (what hmac_auth_v1 takes). */
static int keys_ok(PyObject *keys)
{
    if (!PyList_CheckExact(keys) || PyList_GET_SIZE(keys) == 0)
        return 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++)
        if (!PyBytes_CheckExact(PyList_GET_ITEM(keys, i)) || PyBytes_GET_SIZE(PyList_GET_ITEM(keys, i)) == 0)
            return 0;
    return 1;
}

/* accept_v1's answer read off the body without a dict; Py_None (a new reference): give up. */
static PyObject *accept_scanned(PyObject *body, PyObject *keys, const double *p, PyObject *parts)
{
    scanned o;
    char canon[CANON_ROOM];
    double d, budget;
    int reg;
    if (!PyBytes_CheckExact(body) || !scan_pcs((const unsigned char *)PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body), &o))
        Py_RETURN_NONE;
    size_t canon_len = scanned_canonical(&o, canon);
    if (canon_len == 0 || !scanned_hmac_ok(o.text[K_SIG], canon, canon_len, keys))
        Py_RETURN_NONE;
    long bits = signal_bits(o.s, o.c, o.n_scales, 0, o.coh, o.r, o.d_hat, o.budget, p, &d, &budget, &reg);
    if (bits < 0)
        Py_RETURN_NONE;
    if (reg != o.regime)
        bits |= REASON_REGIME_MISMATCH;
    static const char HEX[] = "0123456789abcdef";
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)canon, canon_len, digest);
    PyObject *pcs_id = PyUnicode_New(64, 127), *hex = PyUnicode_New(2 * SHA256_DIGEST_LENGTH, 127);
    PyObject *out = NULL, *answer = NULL;
    if (pcs_id == NULL || hex == NULL)
        goto done;
    memcpy(PyUnicode_1BYTE_DATA(pcs_id), o.text[K_PCS_ID].p, 64);
    Py_UCS1 *h = PyUnicode_1BYTE_DATA(hex);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        *h++ = (Py_UCS1)HEX[digest[i] >> 4];
        *h++ = (Py_UCS1)HEX[digest[i] & 15];
    }
    answer = bits == 0 ? accepted_body(pcs_id, d, budget, regime_names[reg], parts) : Py_NewRef(Py_None);
    if (answer != NULL)
        out = Py_BuildValue("(OOlddOO)", pcs_id, hex, bits, d, budget, regime_names[reg], answer);
done:
    Py_XDECREF(pcs_id);
    Py_XDECREF(hex);
    Py_XDECREF(answer);
    return out;
}

PyDoc_STRVAR(accept_scan_doc,
"accept_scan(body, keys, params, parts) -> (pcs_id, digest, reason_bits, d_hat, budget, regime, answer) | None\n\n"
"accept_v1's answer for the common case read straight off the body's bytes (no dict,\n"
"no object per field): the same tuple, or None when the scanner gives up -- then\n"
"accept_v1 (the dict path) decides the body. accept_batch tries it first.");

static PyObject *accept_scan(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    double p[N_PARAMS];
    if (nargs != 4 || !keys_ok(args[1]) || !signal_params(args[2], p))
        Py_RETURN_NONE;
    return accept_scanned(args[0], args[1], p, args[3]);
}

/* ---- the batch loop: accept_batch and frame_records ---------------------- */

PyDoc_STRVAR(accept_batch_doc,
"accept_batch(bodies, keys, params, parts) -> list\n\n"
"accept_v1(body, keys, params, parts) of every body of the list bodies, in order,\n"
"in one call (the batch loop of steps 3, 4 and 6 for one tenant's requests): each\n"
"element is accept_v1's answer, a 7-tuple or None (the reference steps decide).\n"
"A body is first read without a dict (accept_scan); accept_v1 decides the bodies the\n"
"scanner gives up on. None when bodies is not a list.");

/* The batch loop of accept_batch and accept_each: accept_v1(bodies[i], keys_i, params, parts_i) of
 * every body, where keys_i and parts_i are keys and parts themselves (each = 0: one receive time
 * for the whole batch) or keys[i] and parts[i] (each = 1: a receive time per record). */
static PyObject *accept_loop(PyObject *module, PyObject *bodies, PyObject *keys, PyObject *params, PyObject *parts,
                             int each)
{
    Py_ssize_t n = PyList_GET_SIZE(bodies);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    PyObject *one[4] = {NULL, keys, params, parts};
    double p[N_PARAMS];
    int params_ok = signal_params(params, p);
    int scan = params_ok && !each && keys_ok(keys);
    PyObject *checked_keys = NULL; /* each: the key list scan was last worked out for (borrowed) */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (each) {
#if FLK_PLANTED_BUG == 4
            Py_ssize_t at = 0; /* the batch's first receive time for every record */
#else
            Py_ssize_t at = i;
#endif
            one[1] = PyList_GET_ITEM(keys, at);
            one[3] = PyList_GET_ITEM(parts, at);
            if (one[1] != checked_keys) { /* records of one time share their key list: checked once */
                checked_keys = one[1];
                scan = params_ok && keys_ok(one[1]);
            }
        }
        one[0] = PyList_GET_ITEM(bodies, i);
        /* the lists may not change under us, but hold what we read anyway */
        Py_INCREF(one[0]);
        Py_INCREF(one[1]);
        Py_INCREF(one[3]);
        PyObject *got = scan ? accept_scanned(one[0], one[1], p, one[3]) : Py_NewRef(Py_None);
        if (got == Py_None) { /* the scanner gave up: the dict path decides */
            Py_DECREF(got);
            got = accept_v1(module, one, 4);
        }
        Py_DECREF(one[0]);
        Py_DECREF(one[1]);
        Py_DECREF(one[3]);
        if (got == NULL) {
            Py_DECREF(out);
            return NULL;
        }
#if FLK_PLANTED_BUG == 1
        if (got == Py_None && i > 0 && PyList_GET_ITEM(out, i - 1) != Py_None) { /* a stale answer */
            Py_DECREF(got);
            got = PyList_GET_ITEM(out, i - 1);
            Py_INCREF(got);
        }
#endif
        PyList_SET_ITEM(out, i, got);
    }
    return out;
}

static PyObject *accept_batch(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyList_CheckExact(args[0]))
        Py_RETURN_NONE;
    return accept_loop(module, args[0], args[1], args[2], args[3], 0);
}

PyDoc_STRVAR(accept_each_doc,
"accept_each(bodies, keys, params, parts) -> list\n\n"
"accept_v1(bodies[i], keys[i], params, parts[i]) of every body of the list bodies, in\n"
"order, in one call: accept_batch with a receive time per record (a replay span of\n"
"records received at different times). keys[i]: the tenant's active keys at record i's\n"
"receive time; parts[i]: its parts (repr of that time first). keys and parts are lists as\n"
"long as bodies; records of one time may share one key list and one parts tuple. None\n"
"when the arguments are not such lists.");

static PyObject *accept_each(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[1]) || !PyList_CheckExact(args[3])
        || PyList_GET_SIZE(args[1]) != PyList_GET_SIZE(args[0]) || PyList_GET_SIZE(args[3]) != PyList_GET_SIZE(args[0]))
        Py_RETURN_NONE;
    return accept_loop(module, args[0], args[1], args[2], args[3], 1);
}

/* CRC-32 (ISO-HDLC, zlib.crc32), slicing by 8 */
static uint32_t crc_table[8][256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
}

static uint32_t crc_update(uint32_t crc, const unsigned char *p, size_t n)
{
    crc = ~crc;
    while (n >= 8) {
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
        crc = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^ crc_table[5][(lo >> 16) & 0xFF]
              ^ crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF]
              ^ crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = crc_table[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

static void put_le32(unsigned char *out, uint32_t v)
{
    out[0] = (unsigned char)v;
    out[1] = (unsigned char)(v >> 8);
    out[2] = (unsigned char)(v >> 16);
    out[3] = (unsigned char)(v >> 24);
}

PyDoc_STRVAR(frame_records_doc,
"frame_records(heads, bodies) -> bytes | None\n\n"
"The WAL frames (flk.impl.storage.walformat.encode_frame) of the payloads\n"
"heads[i] + bodies[i], concatenated in order: per record u32 length, u32 CRC-32 of\n"
"the payload, u32 CRC-32 of those 8 bytes (little-endian), the payload. heads and\n"
"bodies: lists of bytes of one length (a head repeated as the same object is\n"
"checksummed once). None when the arguments are anything else or a payload is\n"
"over the WAL's record limit: the reference frames (and refuses) it.");

static PyObject *frame_records(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[1])
        || PyList_GET_SIZE(args[0]) != PyList_GET_SIZE(args[1]))
        Py_RETURN_NONE;
    PyObject *heads = args[0], *bodies = args[1];
    Py_ssize_t n = PyList_GET_SIZE(bodies), total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *h = PyList_GET_ITEM(heads, i), *b = PyList_GET_ITEM(bodies, i);
        if (!PyBytes_CheckExact(h) || !PyBytes_CheckExact(b))
            Py_RETURN_NONE;
        Py_ssize_t len = PyBytes_GET_SIZE(h) + PyBytes_GET_SIZE(b);
        if (len > WAL_MAX_PAYLOAD)
            Py_RETURN_NONE;
        total += WAL_FRAME_OVERHEAD + len;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        return NULL;
    unsigned char *w = (unsigned char *)PyBytes_AS_STRING(out);
    PyObject *last_head = NULL;
    uint32_t head_crc = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *h = PyList_GET_ITEM(heads, i), *b = PyList_GET_ITEM(bodies, i);
        Py_ssize_t hn = PyBytes_GET_SIZE(h), bn = PyBytes_GET_SIZE(b);
        if (h != last_head) {
            head_crc = crc_update(0, (const unsigned char *)PyBytes_AS_STRING(h), (size_t)hn);
            last_head = h;
        }
        uint32_t crc = crc_update(head_crc, (const unsigned char *)PyBytes_AS_STRING(b), (size_t)bn);
        put_le32(w, (uint32_t)(hn + bn));
        put_le32(w + 4, crc);
#if FLK_PLANTED_BUG == 2
        put_le32(w + 8, crc_update(0, w, i > 0 ? 4 : 8)); /* the header CRC misses the payload CRC */
#else
        put_le32(w + 8, crc_update(0, w, 8));
#endif
        memcpy(w + WAL_FRAME_OVERHEAD, PyBytes_AS_STRING(h), (size_t)hn);
        memcpy(w + WAL_FRAME_OVERHEAD + hn, PyBytes_AS_STRING(b), (size_t)bn);
        w += WAL_FRAME_OVERHEAD + hn + bn;
    }
    return out;
}

/* ---- module ----------------------------------------------------------- */

static PyMethodDef fastverify_methods[] = {
    {"parse_json", (PyCFunction)parse_json, METH_O, parse_json_doc},
    {"pcs_check", (PyCFunction)pcs_check, METH_O, pcs_check_doc},
    {"signal_check", (PyCFunction)(void (*)(void))signal_check, METH_FASTCALL, signal_check_doc},
    {"hmac_auth_v1", (PyCFunction)(void (*)(void))hmac_auth_v1, METH_FASTCALL, hmac_auth_v1_doc},
    {"accept_v1", (PyCFunction)(void (*)(void))accept_v1, METH_FASTCALL, accept_v1_doc},
    {"accept_batch", (PyCFunction)(void (*)(void))accept_batch, METH_FASTCALL, accept_batch_doc},
    {"accept_each", (PyCFunction)(void (*)(void))accept_each, METH_FASTCALL, accept_each_doc},
    {"accept_scan", (PyCFunction)(void (*)(void))accept_scan, METH_FASTCALL, accept_scan_doc},
    {"frame_records", (PyCFunction)(void (*)(void))frame_records, METH_FASTCALL, frame_records_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastverify_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_fastverify",
    .m_doc = "Compiled fast path of the verify pipeline: strict JSON, wire rules, steps 4 and 6, the accept path.",
    .m_size = -1,
    .m_methods = fastverify_methods,
};

PyMODINIT_FUNC PyInit__fastverify(void)
{
    if (core == NULL) {
        core = flk_core_import();
        if (core == NULL)
            return NULL;
    }
    for (int k = 0; k < N_REGIMES; k++) {
        if (regime_names[k] == NULL) {
            regime_names[k] = PyUnicode_InternFromString(REGIME_TEXT[k]);
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
    crc_init();
    return PyModule_Create(&fastverify_module);
}
