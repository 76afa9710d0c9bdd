/* What the core's compiled module (_fastcore.c) offers other compiled modules.
 *
 * Why this header exists: the verifier's compiled module (impl/verifier/_fastverify.c)
 * builds on the core's C code -- canonical bytes, HMAC-SHA256, strict base64,
 * round9 and the Theil-Sen slope -- without a second copy of it. The core module
 * exports the table below as a capsule (FLK_CORE_CAPSULE); flk_core_import()
 * fetches it once in the importing module's init. The direction is the Python
 * one: a verifier source may include this header, a core source never includes a
 * verifier header (tests/quality/test_architecture.py checks the includes too).
 */
#ifndef FLK_FASTCORE_H
#define FLK_FASTCORE_H

#include <Python.h>
#include <stddef.h>

#define FLK_CORE_CAPSULE "flk.impl.core._fastcore.core_api"
#define FLK_SHA256_LEN 32
#define TS_MAX_SCALES 16         /* the compiled Theil-Sen takes at most 16 scales (120 slopes); more: the reference */
#define TS_SCALE_MAX (1LL << 31) /* ... scales in [1, 2^31] and counts in [1, 2^53]; others: the reference */

typedef struct {
    /* canonical bytes (profile v1) of an exact dict in the common case: bytes, None (the pure path
     * decides) or NULL (error set) -- _fastcore.canonical_v1 */
    PyObject *(*canonical_v1)(PyObject *subset);
    /* HMAC-SHA256 (RFC 2104) of msg under key */
    void (*hmac_sha256)(const unsigned char *key, size_t key_len, const unsigned char *msg, size_t msg_len,
                        unsigned char out[FLK_SHA256_LEN]);
    /* strict canonical base64 of a str: bytes, None or NULL -- _fastcore.b64decode_canonical */
    PyObject *(*b64decode_canonical)(PyObject *text);
    /* round9 of a finite double below 2^53 in magnitude: 1 and *out, else 0 */
    int (*round9)(double x, double *out);
    /* Theil-Sen slope of log2(c) on log2(s), n <= TS_MAX_SCALES exact values: 1 and *out, else 0 */
    int (*theil_sen)(const long long *s, const long long *c, Py_ssize_t n, int legacy, double *out);
    /* the double nearest a decimal number token by Clinger's fast path: 1 and *out, else 0 */
    int (*decimal_fast)(const char *text, Py_ssize_t n, double *out);
} flk_core_api;

/* The core's table (a new module's init calls it once); NULL with ImportError set if absent. */
static inline const flk_core_api *flk_core_import(void)
{
    PyObject *module = PyImport_ImportModule("flk.impl.core._fastcore"); /* the capsule lookup walks attributes */
    if (module == NULL)
        return NULL;
    Py_DECREF(module);
    return (const flk_core_api *)PyCapsule_Import(FLK_CORE_CAPSULE, 0);
}

/* An exact int in [lo, hi] (both within long long), its value in *out when out is not NULL;
 * 0 for anything else (no error left set). */
static inline int flk_int_in(PyObject *v, long long lo, long long hi, long long *out)
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

#endif /* FLK_FASTCORE_H */
