/* Compiled fast path of the simulator's history lines: flk.sim._fasthistory.
 *
 * Why this file exists: a digest-only run (flk bench sim, sweeps, long studies)
 * writes about twelve history lines per submission, and building each one in
 * Python (an f-string per event, a JSON string escape per text field, a list of
 * pending lines joined per fold) was a quarter of the simulator's CPU time. This
 * module writes the same lines straight into one UTF-8 buffer.
 *
 * line_sink(flush, batch, value, t_us) makes a LineSink, the compiled twin of the
 * pure reference flk.sim.history.LineSink (the oracle of the differential test
 * tests/sim/test_fasthistory.py; the registry entry "line_sink" of
 * flk.impl.core.accel chooses between them once). A sink holds the lines not yet
 * folded into the history's digest, each followed by "\n", and after every
 * ``batch`` lines hands them to ``flush(bytes)`` (the digest and the compact file).
 *
 *   - sink.add(line): one line made elsewhere (History.record);
 *   - sink.recorder(parts, slots, many): a callable writing one event shape; the
 *     line is parts[0] + value(slots[0]) + parts[1] + ... + parts[-1], a slot
 *     being -1 (the time: round(t * 1000000), Python's round half to even) or
 *     the index of a positional argument. ``rec(t, *args)``, or with ``many``
 *     ``rec(t, rows)`` (one line per row, every row at time t);
 *   - sink.take(): the pending bytes (and the sink empties); sink.count: lines.
 *
 * Every byte is the byte json.dumps(..., ensure_ascii=False) writes: exact str as
 * JSON text (", \ and U+0000..U+001F escaped as json's encoder does, lowercase
 * hex; everything else as UTF-8), exact int as int.__repr__, True/False/None as
 * true/false/null, a finite exact float as float.__repr__. Anything else (a
 * subclass, a NaN, a list, a dict, an int time) goes to the Python callables
 * ``value(v) -> str`` and ``t_us(t) -> int`` the history passes in: the reference
 * decides. A value that cannot be written (a NaN: ValueError, a lone surrogate:
 * UnicodeEncodeError) raises and leaves no partial line.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

/* ---- the sink ----------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    char *buf;
    Py_ssize_t len, cap;
    Py_ssize_t count;   /* lines written */
    Py_ssize_t pending; /* lines since the last flush */
    Py_ssize_t batch;
    PyObject *flush, *value, *t_us;
} Sink;

static int reserve(Sink *s, Py_ssize_t extra)
{
    if (s->len + extra <= s->cap)
        return 0;
    Py_ssize_t cap = s->cap ? s->cap : 1 << 16;
    while (cap < s->len + extra)
        cap *= 2;
    char *grown = PyMem_Realloc(s->buf, (size_t)cap);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->buf = grown;
    s->cap = cap;
    return 0;
}

static inline int put(Sink *s, const char *text, Py_ssize_t n)
{
    if (reserve(s, n) < 0)
        return -1;
    memcpy(s->buf + s->len, text, (size_t)n);
    s->len += n;
    return 0;
}

/* json's escape of one ASCII byte (ensure_ascii=False): 0 = as is. */
static unsigned char ESCAPE[128];

static void init_escapes(void)
{
    for (int c = 0; c < 0x20; c++)
        ESCAPE[c] = 'u';
    ESCAPE['"'] = '"';
    ESCAPE['\\'] = '\\';
    ESCAPE['\b'] = 'b';
    ESCAPE['\f'] = 'f';
    ESCAPE['\n'] = 'n';
    ESCAPE['\r'] = 'r';
    ESCAPE['\t'] = 't';
#ifdef FLK_PLANT_TAB_UNESCAPED /* a planted bug for tests/sim/test_fasthistory.py only */
    ESCAPE['\t'] = 0;
#endif
}

static int put_text(Sink *s, PyObject *str)
{
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(str, &n);
    if (u == NULL)
        return -1;
    if (reserve(s, 6 * n + 2) < 0) /* worst case: every byte a \u00XX */
        return -1;
    char *out = s->buf + s->len;
    *out++ = '"';
    Py_ssize_t i = 0;
    /* eight bytes at a time while none of them needs an escape (a byte below 0x20, '"' or '\\';
     * bytes >= 0x80 are UTF-8, copied as they are): the exact any-byte tests of "Bit Twiddling
     * Hacks" (hasless, haszero) */
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, u + i, 8);
        const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
        uint64_t quote = w ^ (ones * '"'), slash = w ^ (ones * '\\');
        uint64_t special = ((w - ones * 0x20) & ~w) | ((quote - ones) & ~quote) | ((slash - ones) & ~slash);
#ifdef FLK_PLANT_QUOTE_UNSEEN /* a planted bug for tests/sim/test_fasthistory.py only */
        special = ((w - ones * 0x20) & ~w) | ((slash - ones) & ~slash);
#endif
        if (special & highs)
            break;
        memcpy(out, u + i, 8);
        out += 8;
    }
    for (; i < n; i++) {
        unsigned char c = (unsigned char)u[i];
        unsigned char e = c < 128 ? ESCAPE[c] : 0;
        if (e == 0) {
            *out++ = (char)c;
        } else if (e == 'u') {
            static const char hex[] = "0123456789abcdef";
            memcpy(out, "\\u00", 4);
            out[4] = hex[c >> 4];
            out[5] = hex[c & 15];
            out += 6;
        } else {
            out[0] = '\\';
            out[1] = (char)e;
            out += 2;
        }
    }
    *out++ = '"';
    s->len = out - s->buf;
    return 0;
}

static int put_str_object(Sink *s, PyObject *text) /* a str made by Python, copied as UTF-8 */
{
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "history value text must be str, not %.80s", Py_TYPE(text)->tp_name);
        return -1;
    }
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(text, &n);
    return u == NULL ? -1 : put(s, u, n);
}

/* The decimal text of ``v`` (what "%lld" writes) at the start of ``out`` (at least 21 bytes
 * plus the NUL), NUL-terminated; returns its length. Written by hand: snprintf's format parsing
 * cost more than the rest of a history line (a line holds a time and up to a few ints). */
static Py_ssize_t format_long_long(char *out, long long v)
{
    char digits[24];
    char *end = digits + sizeof digits, *p = end;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v; /* LLONG_MIN too */
    do {
        *--p = (char)('0' + (int)(u % 10));
        u /= 10;
    } while (u);
#ifndef FLK_PLANT_MINUS_DROPPED /* a planted bug for tests/sim/test_fasthistory.py only */
    if (v < 0)
        *--p = '-';
#endif
    Py_ssize_t n = end - p;
    memcpy(out, p, (size_t)n);
    out[n] = '\0';
    return n;
}

static int put_long_long(Sink *s, long long v)
{
    char digits[32];
    return put(s, digits, format_long_long(digits, v));
}

static int put_value(Sink *s, PyObject *v)
{
    PyTypeObject *type = Py_TYPE(v);
    if (type == &PyUnicode_Type)
        return put_text(s, v);
    if (type == &PyLong_Type) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (!overflow && !(x == -1 && PyErr_Occurred()))
            return put_long_long(s, x);
        PyErr_Clear();
        PyObject *text = PyLong_Type.tp_repr(v);
        if (text == NULL)
            return -1;
        int rc = put_str_object(s, text);
        Py_DECREF(text);
        return rc;
    }
    if (v == Py_True)
        return put(s, "true", 4);
    if (v == Py_False)
        return put(s, "false", 5);
    if (v == Py_None)
        return put(s, "null", 4);
    if (type == &PyFloat_Type && isfinite(PyFloat_AS_DOUBLE(v))) {
        char *text = PyOS_double_to_string(PyFloat_AS_DOUBLE(v), 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (text == NULL)
            return -1;
        int rc = put(s, text, (Py_ssize_t)strlen(text));
        PyMem_Free(text);
        return rc;
    }
    if (type == &PyList_Type || type == &PyTuple_Type) {
        /* a list (or tuple) of str -- a request's key [tenant, pcs_id] -- written here as
         * _dumps writes it: ["a","b"] (separators "," and ":", each str as a str field) */
        Py_ssize_t n = PySequence_Fast_GET_SIZE(v), i;
        PyObject **items = PySequence_Fast_ITEMS(v);
        for (i = 0; i < n && Py_TYPE(items[i]) == &PyUnicode_Type; i++)
            ;
        if (i == n) {
            if (put(s, "[", 1) < 0)
                return -1;
            for (i = 0; i < n; i++)
                if ((i > 0 && put(s, ",", 1) < 0) || put_text(s, items[i]) < 0)
                    return -1;
            return put(s, "]", 1);
        }
    }
    PyObject *text = PyObject_CallOneArg(s->value, v); /* the reference decides (or raises) */
    if (text == NULL)
        return -1;
    int rc = put_str_object(s, text);
    Py_DECREF(text);
    return rc;
}

/* The text of round(t * 1000000): into ``digits`` for a finite float time, else made by the
 * reference's t_us(t) and returned (owned; the caller reads its UTF-8); NULL with an exception
 * set, or with ``*done`` = 1 when ``digits`` holds the text. */
static PyObject *time_text(Sink *s, PyObject *t, char *digits, size_t size, int *done)
{
    *done = 0;
    if (Py_TYPE(t) == &PyFloat_Type) {
        double x = PyFloat_AS_DOUBLE(t) * 1000000.0;
        if (isfinite(x)) {
            double rounded = round(x); /* float.__round__(): half away from zero, then ties to even */
            if (fabs(x - rounded) == 0.5)
                rounded = 2.0 * round(x / 2.0);
            if (fabs(rounded) < 9.0e18 && size >= 22) {
                format_long_long(digits, (long long)rounded);
                *done = 1;
                return NULL;
            }
        }
    }
    PyObject *us = PyObject_CallOneArg(s->t_us, t);
    if (us == NULL)
        return NULL;
    PyObject *text = PyObject_Str(us);
    Py_DECREF(us);
    return text;
}

/* One line ended: count it, flush every ``batch`` lines. */
static int line_done(Sink *s)
{
    s->buf[s->len++] = '\n'; /* reserved by the caller */
    s->count++;
    if (++s->pending >= s->batch) {
        s->pending = 0;
        PyObject *chunk = PyBytes_FromStringAndSize(s->buf, s->len);
        if (chunk == NULL)
            return -1;
        s->len = 0;
        PyObject *r = PyObject_CallOneArg(s->flush, chunk);
        Py_DECREF(chunk);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

static PyObject *sink_add(Sink *s, PyObject *line)
{
    Py_ssize_t start = s->len;
    if (put_str_object(s, line) < 0 || reserve(s, 1) < 0) {
        s->len = start;
        return NULL;
    }
    if (line_done(s) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *sink_take(Sink *s, PyObject *Py_UNUSED(ignored))
{
    PyObject *chunk = PyBytes_FromStringAndSize(s->buf, s->len);
    if (chunk != NULL) {
        s->len = 0;
        s->pending = 0;
    }
    return chunk;
}

/* ---- recorders ----------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Sink *sink;
    PyObject *parts;     /* tuple of str (kept alive: their UTF-8 is read in place) */
    const char **text;   /* parts' UTF-8 */
    Py_ssize_t *text_len;
    int *slots;          /* -1: the time, else an argument index */
    Py_ssize_t nslots, nargs;
    int many;
} Recorder;

static int write_row(Recorder *r, const char *t_text, Py_ssize_t t_len, PyObject *const *args)
{
    Sink *s = r->sink;
    Py_ssize_t start = s->len;
    for (Py_ssize_t i = 0; i < r->nslots; i++) {
        if (put(s, r->text[i], r->text_len[i]) < 0)
            goto fail;
        int slot = r->slots[i];
        int rc = slot < 0 ? put(s, t_text, t_len) : put_value(s, args[slot]);
        if (rc < 0)
            goto fail;
    }
    if (put(s, r->text[r->nslots], r->text_len[r->nslots]) < 0 || reserve(s, 1) < 0)
        goto fail;
    return line_done(s);
fail:
    s->len = start;
    return -1;
}

static PyObject *write_one(Recorder *r, const char *t_text, Py_ssize_t t_len, PyObject *const *args);
static PyObject *write_rows(Recorder *r, const char *t_text, Py_ssize_t t_len, PyObject *rows);

static PyObject *recorder_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Recorder *r = (Recorder *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t want = r->many ? 2 : r->nargs + 1;
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames)) {
        PyErr_SetString(PyExc_TypeError, "a history recorder takes positional arguments only");
        return NULL;
    }
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "a history recorder takes %zd positional arguments (%zd given)", want, nargs);
        return NULL;
    }
    char digits[40];
    int done;
    PyObject *held = time_text(r->sink, args[0], digits, sizeof digits, &done);
    if (held == NULL && !done)
        return NULL;
    const char *t_text = digits;
    Py_ssize_t t_len = (Py_ssize_t)strlen(digits);
    if (held != NULL && (t_text = PyUnicode_AsUTF8AndSize(held, &t_len)) == NULL) {
        Py_DECREF(held);
        return NULL;
    }
    PyObject *result = r->many ? write_rows(r, t_text, t_len, args[1]) : write_one(r, t_text, t_len, args + 1);
    Py_XDECREF(held);
    return result;
}

static PyObject *write_one(Recorder *r, const char *t_text, Py_ssize_t t_len, PyObject *const *args)
{
    if (write_row(r, t_text, t_len, args) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *write_rows(Recorder *r, const char *t_text, Py_ssize_t t_len, PyObject *rows)
{
    PyObject *it = PyObject_GetIter(rows);
    if (it == NULL)
        return NULL;
    PyObject *row;
    while ((row = PyIter_Next(it)) != NULL) {
        PyObject *seq = PySequence_Fast(row, "a history row must be a sequence");
        Py_DECREF(row);
        if (seq == NULL)
            goto fail;
        if (PySequence_Fast_GET_SIZE(seq) != r->nargs) {
            PyErr_Format(PyExc_ValueError, "a history row holds %zd values, expected %zd",
                         PySequence_Fast_GET_SIZE(seq), r->nargs);
            Py_DECREF(seq);
            goto fail;
        }
        int rc = write_row(r, t_text, t_len, PySequence_Fast_ITEMS(seq));
        Py_DECREF(seq);
        if (rc < 0)
            goto fail;
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
fail:
    Py_DECREF(it);
    return NULL;
}

static void recorder_dealloc(Recorder *r)
{
    PyObject_GC_UnTrack(r);
    Py_CLEAR(r->sink);
    Py_CLEAR(r->parts);
    PyMem_Free(r->text);
    PyMem_Free(r->text_len);
    PyMem_Free(r->slots);
    PyObject_GC_Del(r);
}

static int recorder_traverse(Recorder *r, visitproc visit, void *arg)
{
    Py_VISIT(r->sink);
    Py_VISIT(r->parts);
    return 0;
}

static PyTypeObject RecorderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flk.sim._fasthistory.Recorder",
    .tp_basicsize = sizeof(Recorder),
    .tp_dealloc = (destructor)recorder_dealloc,
    .tp_vectorcall_offset = offsetof(Recorder, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_traverse = (traverseproc)recorder_traverse,
    .tp_doc = "rec(t, *values) (or rec(t, rows)): one history line per call (per row).",
};

static PyObject *sink_recorder(Sink *s, PyObject *args)
{
    PyObject *parts, *slots;
    int many;
    if (!PyArg_ParseTuple(args, "O!O!p:recorder", &PyTuple_Type, &parts, &PyTuple_Type, &slots, &many))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(slots);
    if (PyTuple_GET_SIZE(parts) != n + 1) {
        PyErr_SetString(PyExc_ValueError, "recorder: len(parts) must be len(slots) + 1");
        return NULL;
    }
    Recorder *r = PyObject_GC_New(Recorder, &RecorderType);
    if (r == NULL)
        return NULL;
    r->vectorcall = recorder_call;
    r->sink = (Sink *)Py_NewRef(s);
    r->parts = Py_NewRef(parts);
    r->nslots = n;
    r->nargs = 0;
    r->many = many;
    r->text = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    r->text_len = PyMem_Calloc((size_t)n + 1, sizeof(Py_ssize_t));
    r->slots = PyMem_Calloc((size_t)n + 1, sizeof(int));
    PyObject_GC_Track(r);
    if (r->text == NULL || r->text_len == NULL || r->slots == NULL) {
        Py_DECREF(r);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i <= n; i++) {
        PyObject *part = PyTuple_GET_ITEM(parts, i);
        if (!PyUnicode_Check(part)) {
            PyErr_SetString(PyExc_TypeError, "recorder: parts must be str");
            Py_DECREF(r);
            return NULL;
        }
        r->text[i] = PyUnicode_AsUTF8AndSize(part, &r->text_len[i]);
        if (r->text[i] == NULL) {
            Py_DECREF(r);
            return NULL;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long slot = PyLong_AsLong(PyTuple_GET_ITEM(slots, i));
        if (slot == -1 && PyErr_Occurred()) {
            Py_DECREF(r);
            return NULL;
        }
        if (slot < -1 || slot > 4096) {
            PyErr_SetString(PyExc_ValueError, "recorder: a slot is -1 (the time) or an argument index");
            Py_DECREF(r);
            return NULL;
        }
        r->slots[i] = (int)slot;
        if (slot + 1 > r->nargs)
            r->nargs = slot + 1;
    }
    return (PyObject *)r;
}

static void sink_dealloc(Sink *s)
{
    PyObject_GC_UnTrack(s);
    Py_CLEAR(s->flush);
    Py_CLEAR(s->value);
    Py_CLEAR(s->t_us);
    PyMem_Free(s->buf);
    PyObject_GC_Del(s);
}

static int sink_traverse(Sink *s, visitproc visit, void *arg)
{
    Py_VISIT(s->flush);
    Py_VISIT(s->value);
    Py_VISIT(s->t_us);
    return 0;
}

static int sink_clear(Sink *s)
{
    Py_CLEAR(s->flush);
    Py_CLEAR(s->value);
    Py_CLEAR(s->t_us);
    return 0;
}

static PyMethodDef sink_methods[] = {
    {"add", (PyCFunction)sink_add, METH_O, "add(line): one line made elsewhere."},
    {"take", (PyCFunction)sink_take, METH_NOARGS, "take() -> bytes: the pending lines; the sink empties."},
    {"recorder", (PyCFunction)sink_recorder, METH_VARARGS, "recorder(parts, slots, many) -> a recorder."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef sink_members[] = {
    {"count", T_PYSSIZET, offsetof(Sink, count), READONLY, "lines written"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject SinkType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flk.sim._fasthistory.LineSink",
    .tp_basicsize = sizeof(Sink),
    .tp_dealloc = (destructor)sink_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)sink_traverse,
    .tp_clear = (inquiry)sink_clear,
    .tp_methods = sink_methods,
    .tp_members = sink_members,
    .tp_doc = "The history lines not yet folded into the digest (flk.sim.history.LineSink's twin).",
};

PyDoc_STRVAR(line_sink_doc,
"line_sink(flush, batch, value, t_us) -> LineSink\n\n"
"A sink that calls flush(bytes) after every batch lines; value(v) -> str and t_us(t) -> int\n"
"write what the compiled code leaves to the reference.");

static PyObject *line_sink(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "line_sink takes exactly four arguments (flush, batch, value, t_us)");
        return NULL;
    }
    Py_ssize_t batch = PyLong_AsSsize_t(args[1]);
    if (batch == -1 && PyErr_Occurred())
        return NULL;
    if (batch < 1) {
        PyErr_SetString(PyExc_ValueError, "line_sink: batch must be >= 1");
        return NULL;
    }
    Sink *s = PyObject_GC_New(Sink, &SinkType);
    if (s == NULL)
        return NULL;
    s->buf = NULL;
    s->len = s->cap = s->count = s->pending = 0;
    s->batch = batch;
    s->flush = Py_NewRef(args[0]);
    s->value = Py_NewRef(args[2]);
    s->t_us = Py_NewRef(args[3]);
    PyObject_GC_Track(s);
    return (PyObject *)s;
}

static PyMethodDef fasthistory_methods[] = {
    {"line_sink", (PyCFunction)(void (*)(void))line_sink, METH_FASTCALL, line_sink_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fasthistory_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_fasthistory",
    .m_doc = "Compiled fast path of the simulator's history lines (flk.sim.history.LineSink's twin).",
    .m_size = -1,
    .m_methods = fasthistory_methods,
};

PyMODINIT_FUNC PyInit__fasthistory(void)
{
    init_escapes();
    if (PyType_Ready(&SinkType) < 0 || PyType_Ready(&RecorderType) < 0)
        return NULL;
    return PyModule_Create(&fasthistory_module);
}
