/* The optional compiled accelerator of aiologsinks: the hot path's common cases.
 *
 * - freeze_plain(d): _record.freeze() turns a plain LogRecord into a flat tuple of its
 *   attribute values (see _record.py for the layout). Its common case - an exact
 *   LogRecord with the standard attributes (and at most MAX_EXTRA extra= attributes of
 *   immutable types), no exception, and a str message whose arguments are all of
 *   immutable types (or none) - is done here, in one allocation, and the tuple is
 *   untracked by the cyclic GC at once when it holds no tracked object: a queued record
 *   then costs no collection anything. It returns exactly the tuple the pure-Python
 *   path returns for a record whose __dict__ is d, or None when the record is not the
 *   common case (the caller then takes the pure-Python path, which handles every one).
 * - Shim: QueueHandler.handle's common case in one call (below).
 * - format_run: the inner loop of the file sinks' formatting (below).
 * - json_run: the inner loop of HTTPSink's JSON batches (below).
 * - FdWriter: a file's writes on a thread of its own that never takes the GIL (below).
 *
 * configure(fields) gives the standard attribute names in LogRecord.__init__ order, as
 * _record.FIELDS has them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "_shortest.h"

/* 1 where float.__repr__ writes the shortest round-tripping digits (sys.float_repr_style
 * "short", every platform CPython builds on with IEEE doubles): json_run then writes
 * floats with shortest_repr, the same text without a str object or the digit search */
static int short_float_repr = 0;

static PyObject *fields = NULL; /* tuple of str: LogRecord's attributes, in order */
static Py_ssize_t n_fields = 0;
static Py_ssize_t args_at = -1;
static Py_ssize_t msg_at = -1;
static Py_ssize_t exc_info_at = -1;
static Py_ssize_t exc_text_at = -1;
static Py_ssize_t stack_info_at = -1;
static Py_ssize_t created_at = -1;
static Py_ssize_t msecs_at = -1;

/* Fields that repeat from record to record with a new object each time (the thread
 * and process ids, msecs within one millisecond): a queued record keeps the previous
 * record's equal object instead, so a burst of queued records holds (and allocates
 * into new memory) fewer objects. Equal values of the same exact type are
 * interchangeable: int and float are immutable and nothing reads their identity. */
#define N_SHARED 3
static const char *shared_names[N_SHARED] = {"thread", "process", "msecs"};
static Py_ssize_t shared_at[N_SHARED] = {-1, -1, -1};
static PyObject *shared_last[N_SHARED] = {NULL, NULL, NULL};

static PyObject *
shared(int k, PyObject *v)
{
    PyObject *last = shared_last[k];
    if (v == last || last == NULL || Py_TYPE(v) != Py_TYPE(last)) {
        goto remember;
    }
    if (PyFloat_CheckExact(v)) {
        double a = PyFloat_AS_DOUBLE(v), b = PyFloat_AS_DOUBLE(last);
        if (memcmp(&a, &b, sizeof a) == 0) { /* bit for bit: -0.0 is not 0.0 */
            return last;
        }
    }
    else if (PyLong_CheckExact(v)) {
        /* thread and process ids fit in 64 bits: compared without the rich-compare
         * dispatch; larger ones are simply not shared */
        int over_v, over_last;
        long long a = PyLong_AsLongLongAndOverflow(v, &over_v);
        long long b = PyLong_AsLongLongAndOverflow(last, &over_last);
        if (PyErr_Occurred()) {
            PyErr_Clear();
        }
        else if (!over_v && !over_last && a == b) {
            return last;
        }
    }
remember:
    if (PyFloat_CheckExact(v) || PyLong_CheckExact(v)) {
        Py_INCREF(v);
        Py_XSETREF(shared_last[k], v);
    }
    return v;
}

static int
immutable(PyObject *v)
{
    PyTypeObject *t = Py_TYPE(v);
    return t == &PyUnicode_Type || t == &PyLong_Type || t == &PyFloat_Type
        || t == &PyBool_Type || t == &PyBytes_Type || v == Py_None;
}

/* extra= names: a call site logs the same ones each time, so the last names tuple is
 * reused (compared name by name) rather than one more tuple kept per queued record */
#define MAX_EXTRA 16
static PyObject *not_extra = NULL; /* set: the standard names, message and asctime */
static PyObject *last_names = NULL;

static PyObject *
extra_names(PyObject **keys, Py_ssize_t n)
{
    if (last_names != NULL && PyTuple_GET_SIZE(last_names) == n) {
        Py_ssize_t i = 0;
        for (; i < n; i++) {
            PyObject *a = PyTuple_GET_ITEM(last_names, i);
            if (a != keys[i] && PyUnicode_Compare(a, keys[i]) != 0) {
                break;
            }
        }
        if (i == n) {
            return Py_NewRef(last_names);
        }
    }
    PyObject *names = PyTuple_New(n);
    if (names == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_INCREF(keys[i]);
        PyTuple_SET_ITEM(names, i, keys[i]);
    }
    PyObject_GC_UnTrack(names); /* str items only: the GC would untrack it itself */
    Py_XSETREF(last_names, Py_NewRef(names));
    return names;
}

static PyObject *
freeze_plain(PyObject *module, PyObject *d)
{
    if (fields == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups.configure() was not called");
        return NULL;
    }
    if (!PyDict_CheckExact(d) || PyDict_GET_SIZE(d) < n_fields
        || PyDict_GET_SIZE(d) > n_fields + MAX_EXTRA) {
        Py_RETURN_NONE; /* not a record's __dict__, or many extra= attributes */
    }
    /* LogRecord.__init__ sets its attributes in FIELDS order, so a plain record's dict
     * has exactly those keys in that order: walked in step, no key is hashed or
     * compared (no user code runs, so the borrowed values stay valid). Any other
     * dict is left to the pure-Python path. */
    PyObject *values[64];
    if (n_fields > 64) {
        Py_RETURN_NONE;
    }
    Py_ssize_t pos = 0;
    PyObject *key;
    for (Py_ssize_t i = 0; i < n_fields; i++) {
        if (!PyDict_Next(d, &pos, &key, &values[i]) || key != PyTuple_GET_ITEM(fields, i)) {
            Py_RETURN_NONE;
        }
    }
    PyObject *msg = values[msg_at], *args = values[args_at];
    if (values[exc_info_at] != Py_None || !PyUnicode_CheckExact(msg)
        || !PyTuple_CheckExact(args)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t n_args = PyTuple_GET_SIZE(args);
    for (Py_ssize_t i = 0; i < n_args; i++) {
        if (!immutable(PyTuple_GET_ITEM(args, i))) {
            Py_RETURN_NONE; /* merged at the call, by the pure-Python path */
        }
    }
    /* extra= attributes follow the standard ones: str names that are not standard
     * (nor a formatter's message/asctime), values of immutable types */
    PyObject *extra_keys[MAX_EXTRA], *extra_values[MAX_EXTRA];
    Py_ssize_t n_extra = PyDict_GET_SIZE(d) - n_fields;
    for (Py_ssize_t i = 0; i < n_extra; i++) {
        if (!PyDict_Next(d, &pos, &extra_keys[i], &extra_values[i])
            || !PyUnicode_CheckExact(extra_keys[i]) || !immutable(extra_values[i])) {
            Py_RETURN_NONE;
        }
        int standard = PySet_Contains(not_extra, extra_keys[i]);
        if (standard != 0) {
            if (standard < 0) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
    }
    PyObject *names = NULL;
    if (n_extra) {
        names = extra_names(extra_keys, n_extra);
        if (names == NULL) {
            return NULL;
        }
    }
    /* deferred arguments travel after the fields; without any, args stays */
    values[args_at] = n_args ? Py_None : args;
    PyObject *out = PyTuple_New(n_fields + n_args + (n_extra ? n_extra + 1 : 0));
    if (out == NULL) {
        Py_XDECREF(names);
        return NULL;
    }
    int tracked = 0;
    for (int k = 0; k < N_SHARED; k++) {
        values[shared_at[k]] = shared(k, values[shared_at[k]]);
    }
    for (Py_ssize_t i = 0; i < n_fields; i++) {
        PyObject *v = values[i];
        tracked |= PyObject_GC_IsTracked(v);
        Py_INCREF(v);
        PyTuple_SET_ITEM(out, i, v);
    }
    for (Py_ssize_t i = 0; i < n_args; i++) {
        PyObject *v = PyTuple_GET_ITEM(args, i);
        Py_INCREF(v);
        PyTuple_SET_ITEM(out, n_fields + i, v);
    }
    if (n_extra) {
        Py_ssize_t at = n_fields + n_args;
        for (Py_ssize_t i = 0; i < n_extra; i++) {
            Py_INCREF(extra_values[i]);
            PyTuple_SET_ITEM(out, at + i, extra_values[i]);
        }
        PyTuple_SET_ITEM(out, at + n_extra, names); /* the reference extra_names gave */
    }
    if (!tracked) {
        /* what the GC would do at its next collection, after traversing it */
        PyObject_GC_UnTrack(out);
    }
    return out;
}

/* format_run(items, start, out, fmt, fields, templates, formats, lo, hi, ms, timed)
 *
 * The inner loop of _fastformat.FrozenFormat.lines for its common records: from
 * items[start], appends each line to out while the record is one the loop's state
 * already covers - a frozen tuple without exception or stack text and with its
 * message merged or deferred, whose time stamp is the current one (msecs == ms,
 * unless ms < 0: the milliseconds are a field; lo <= created < hi) and whose
 * deferred template, if any, has its format for that
 * time stamp in formats. Returns the index of the first item it did not format (the
 * Python loop takes that one, updates its state and calls again), len(items) at the
 * end. The lines are exactly the Python loop's: the same format, the same getter, the
 * same %; where that % fails, this stops at the item and the Python loop reports it.
 */
/* fmt % values for the common lines, without PyUnicode_Format's general machinery
 * (its writer, its per-conversion dispatch and the result's resizing): an ASCII
 * format whose conversions are %s of an ASCII str, an int or a float, %d/%i of an int
 * or a float (optionally with a width, zero-padded or not), %f/%.Nf of a float, and
 * %%, with exactly as many values as conversions. 1: *line is the text, the same as
 * PyUnicode_Format's; 0: not such a line (nothing done: the caller uses
 * PyUnicode_Format, which also reports what is wrong with it); -1: an error. */
#define PERCENT_MAX 4096

static Py_ssize_t
decimal_text(long long x, Py_ssize_t width, int zero, char *out)
{
    /* out holds at least 20 + width bytes */
    char digits[24];
    int n = 0;
    unsigned long long u = x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x;
    do {
        digits[sizeof digits - 1 - n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    Py_ssize_t len = n + (x < 0), pad = width > len ? width - len : 0;
    char *p = out;
    if (!zero) {
        memset(p, ' ', (size_t)pad);
        p += pad;
    }
    if (x < 0) {
        *p++ = '-';
    }
    if (zero) {
        memset(p, '0', (size_t)pad);
        p += pad;
    }
    memcpy(p, digits + sizeof digits - n, (size_t)n);
    return p + n - out;
}

static int
fast_percent(PyObject *fmt, PyObject *const *values, Py_ssize_t n_values, PyObject **line)
{
    if (!PyUnicode_IS_ASCII(fmt)) {
        return 0;
    }
    const char *f = (const char *)PyUnicode_1BYTE_DATA(fmt);
    const char *end = f + PyUnicode_GET_LENGTH(fmt);
    Py_ssize_t used = 0, n = 0;
    char out[PERCENT_MAX];
    char text[96];
    while (f < end) {
        const char *pct = memchr(f, '%', (size_t)(end - f));
        Py_ssize_t literal = (pct != NULL ? pct : end) - f;
        if (n + literal > PERCENT_MAX) {
            return 0;
        }
        memcpy(out + n, f, (size_t)literal);
        n += literal;
        if (pct == NULL) {
            break;
        }
        f = pct + 1;
        if (f < end && *f == '%') {
            if (n + 1 > PERCENT_MAX) {
                return 0;
            }
            out[n++] = '%';
            f++;
            continue;
        }
        int zero = 0, precision = -1;
        Py_ssize_t width = 0;
        if (f < end && *f == '0') {
            zero = 1;
            f++;
        }
        while (f < end && *f >= '0' && *f <= '9') {
            width = width * 10 + (*f++ - '0');
            if (width > 64) {
                return 0;
            }
        }
        if (f < end && *f == '.') {
            precision = 0;
            for (f++; f < end && *f >= '0' && *f <= '9'; f++) {
                precision = precision * 10 + (*f - '0');
                if (precision > 40) {
                    return 0;
                }
            }
        }
        if (f >= end || used >= n_values) {
            return 0;
        }
        char conversion = *f++;
        PyObject *v = values[used++];
        const char *piece = text;
        Py_ssize_t size;
        char *allocated = NULL;
        if (conversion == 's' && width == 0 && precision < 0 && !zero) {
            if (PyUnicode_CheckExact(v)) {
                if (!PyUnicode_IS_ASCII(v)) {
                    return 0;
                }
                piece = (const char *)PyUnicode_1BYTE_DATA(v);
                size = PyUnicode_GET_LENGTH(v);
            }
            else if (PyLong_CheckExact(v)) {
                int overflow;
                long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
                if (overflow || (x == -1 && PyErr_Occurred())) {
                    PyErr_Clear();
                    return 0;
                }
                size = decimal_text(x, 0, 0, text);
            }
            else if (PyFloat_CheckExact(v) && short_float_repr
                     && isfinite(PyFloat_AS_DOUBLE(v))) {
                size = shortest_repr(PyFloat_AS_DOUBLE(v), text); /* str(float) is repr */
            }
            else {
                return 0;
            }
        }
        else if ((conversion == 'd' || conversion == 'i') && precision < 0) {
            long long x;
            if (PyLong_CheckExact(v)) {
                int overflow;
                x = PyLong_AsLongLongAndOverflow(v, &overflow);
                if (overflow || (x == -1 && PyErr_Occurred())) {
                    PyErr_Clear();
                    return 0;
                }
            }
            else if (PyFloat_CheckExact(v) && fabs(PyFloat_AS_DOUBLE(v)) < 9.0e18) {
                x = (long long)PyFloat_AS_DOUBLE(v); /* int(): toward zero */
            }
            else {
                return 0;
            }
            size = decimal_text(x, width, zero, text);
        }
        else if (conversion == 'f' && width == 0 && !zero && PyFloat_CheckExact(v)
                 && isfinite(PyFloat_AS_DOUBLE(v))) {
            /* what PyUnicode_Format's %f calls, with the same arguments */
            allocated = PyOS_double_to_string(PyFloat_AS_DOUBLE(v), 'f',
                                              precision < 0 ? 6 : precision, 0, NULL);
            if (allocated == NULL) {
                return -1;
            }
            piece = allocated;
            size = (Py_ssize_t)strlen(allocated);
        }
        else {
            return 0;
        }
        int room = n + size <= PERCENT_MAX;
        if (room) {
            memcpy(out + n, piece, (size_t)size);
            n += size;
        }
        PyMem_Free(allocated);
        if (!room) {
            return 0;
        }
    }
    if (used != n_values) {
        return 0; /* PyUnicode_Format says "not all arguments converted" */
    }
    PyObject *result = PyUnicode_New(n, 127);
    if (result == NULL) {
        return -1;
    }
    memcpy(PyUnicode_1BYTE_DATA(result), out, (size_t)n);
    *line = result;
    return 1;
}

/* fmt % values: the compiled way where it applies, else PyUnicode_Format */
static PyObject *
percent(PyObject *fmt, PyObject *values)
{
    PyObject *line;
    int fast = PyTuple_CheckExact(values)
                   ? fast_percent(fmt, &PyTuple_GET_ITEM(values, 0), PyTuple_GET_SIZE(values),
                                  &line)
                   : 0;
    if (fast == 0) {
        return PyUnicode_Format(fmt, values);
    }
    return fast < 0 ? NULL : line;
}

static PyObject *
percent_format(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyUnicode_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "percent_format(fmt: str, values: tuple)");
        return NULL;
    }
    if (!PyTuple_CheckExact(args[1])) {
        Py_RETURN_NONE;
    }
    PyObject *line;
    int rc = fast_percent(args[0], &PyTuple_GET_ITEM(args[1], 0), PyTuple_GET_SIZE(args[1]),
                          &line);
    if (rc < 0) {
        return NULL;
    }
    return rc ? line : Py_NewRef(Py_None);
}

/* Fields(indices): operator.itemgetter(*indices) that always returns a tuple (also of
 * one index or none), for the formats' values. format_run reads a record's values
 * through it in place, without the tuple, where the compiled formatting takes the
 * line. */
#define FIELDS_MAX 64
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Py_ssize_t n;
    Py_ssize_t at[FIELDS_MAX];
} Fields;

static PyTypeObject FieldsType;

static PyObject *
fields_call(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Fields *self = (Fields *)callable;
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "Fields() takes one positional argument");
        return NULL;
    }
    PyObject *v = args[0];
    PyObject *out = PyTuple_New(self->n);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t k = 0; k < self->n; k++) {
        PyObject *item = PySequence_GetItem(v, self->at[k]);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, k, item);
    }
    return out;
}

static PyObject *
fields_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *indices;
    if ((kwargs != NULL && PyDict_GET_SIZE(kwargs))
        || !PyArg_UnpackTuple(args, "Fields", 1, 1, &indices)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "Fields() takes no keyword arguments");
        }
        return NULL;
    }
    PyObject *seq = PySequence_Fast(indices, "Fields(): indices must be a sequence");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > FIELDS_MAX) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "Fields(): at most %d indices", FIELDS_MAX);
        return NULL;
    }
    Fields *self = (Fields *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    self->vectorcall = fields_call;
    self->n = n;
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_ssize_t i = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(seq, k));
        if (i < 0) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "Fields(): indices must be >= 0");
            }
            Py_DECREF(seq);
            Py_DECREF(self);
            return NULL;
        }
        self->at[k] = i;
    }
    Py_DECREF(seq);
    return (PyObject *)self;
}

static PyObject *
fields_repr(Fields *self)
{
    PyObject *at = PyList_New(self->n);
    if (at == NULL) {
        return NULL;
    }
    for (Py_ssize_t k = 0; k < self->n; k++) {
        PyObject *i = PyLong_FromSsize_t(self->at[k]);
        if (i == NULL) {
            Py_DECREF(at);
            return NULL;
        }
        PyList_SET_ITEM(at, k, i);
    }
    PyObject *text = PyUnicode_FromFormat("Fields(%R)", at);
    Py_DECREF(at);
    return text;
}

static PyTypeObject FieldsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aiologsinks._speedups.Fields",
    .tp_basicsize = sizeof(Fields),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Fields(indices)(v) -> tuple(v[i] for i in indices).",
    .tp_new = fields_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Fields, vectorcall),
    .tp_repr = (reprfunc)fields_repr,
};

static int
formats_one(PyObject *fmt, PyObject *getter, PyObject *v, PyObject *out)
{
    if (Py_TYPE(getter) == &FieldsType && PyTuple_CheckExact(v)) {
        /* the values in place: borrowed from v, which the caller holds */
        Fields *g = (Fields *)getter;
        PyObject *values[FIELDS_MAX];
        Py_ssize_t k = 0, size = PyTuple_GET_SIZE(v);
        for (; k < g->n && g->at[k] < size; k++) {
            values[k] = PyTuple_GET_ITEM(v, g->at[k]);
        }
        if (k == g->n) {
            PyObject *line;
            int fast = fast_percent(fmt, values, g->n, &line);
            if (fast < 0) {
                return -1;
            }
            if (fast) {
                int rc = PyList_Append(out, line);
                Py_DECREF(line);
                return rc;
            }
        }
    }
    PyObject *values = PyObject_CallOneArg(getter, v);
    if (values == NULL) {
        return -1;
    }
    PyObject *line = percent(fmt, values);
    Py_DECREF(values);
    if (line == NULL) {
        return -1;
    }
    int rc = PyList_Append(out, line);
    Py_DECREF(line);
    return rc;
}

static int
no_args(PyObject *args)
{
    /* a merged message (None) or one that had none (the empty tuple) */
    return args == Py_None || (PyTuple_CheckExact(args) && PyTuple_GET_SIZE(args) == 0);
}

static PyObject *
format_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "format_run() takes 11 arguments");
        return NULL;
    }
    PyObject *items = args[0], *out = args[2], *fmt = args[3], *fields_of = args[4];
    PyObject *templates = args[5], *formats = args[6];
    if (!PyList_CheckExact(items) || !PyList_CheckExact(out) || !PyUnicode_CheckExact(fmt)
        || !PyDict_CheckExact(templates) || !PyDict_CheckExact(formats)) {
        PyErr_SetString(PyExc_TypeError, "format_run(): unexpected argument types");
        return NULL;
    }
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    double lo = PyFloat_AsDouble(args[7]), hi = PyFloat_AsDouble(args[8]);
    double ms = PyFloat_AsDouble(args[9]);
    int timed = PyObject_IsTrue(args[10]);
    if (PyErr_Occurred() || timed < 0) {
        return NULL;
    }
    if (fields == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups.configure() was not called");
        return NULL;
    }
    for (; i < PyList_GET_SIZE(items); i++) {
        PyObject *v = PyList_GET_ITEM(items, i);
        if (!PyTuple_CheckExact(v)) {
            break;
        }
        Py_ssize_t size = PyTuple_GET_SIZE(v);
        if (size < n_fields || PyTuple_GET_ITEM(v, exc_text_at) != Py_None
            || PyTuple_GET_ITEM(v, stack_info_at) != Py_None
            || !no_args(PyTuple_GET_ITEM(v, args_at))
            || !PyUnicode_CheckExact(PyTuple_GET_ITEM(v, msg_at))) {
            break;
        }
        if (timed) {
            PyObject *created = PyTuple_GET_ITEM(v, created_at);
            PyObject *msecs = PyTuple_GET_ITEM(v, msecs_at);
            if (!PyFloat_CheckExact(created) || !PyFloat_CheckExact(msecs)
                || (ms >= 0 && PyFloat_AS_DOUBLE(msecs) != ms)
                || !(lo <= PyFloat_AS_DOUBLE(created))
                || !(PyFloat_AS_DOUBLE(created) < hi)) {
                break; /* a new time stamp: the Python loop makes its formats */
            }
        }
        Py_ssize_t n_args = size - n_fields;
        if (n_args > 0) {
            PyObject *last = PyTuple_GET_ITEM(v, size - 1);
            if (PyTuple_CheckExact(last)) { /* extra= values and their names follow */
                n_args -= 1 + PyTuple_GET_SIZE(last);
                if (n_args < 0) {
                    break;
                }
            }
        }
        if (n_args == 0) {
            /* held: a field's __str__ may be user code (a filter can set any value) */
            Py_INCREF(v);
            int rc = formats_one(fmt, fields_of, v, out);
            Py_DECREF(v);
            if (rc < 0) {
                PyErr_Clear(); /* the Python loop does it again and reports it */
                break;
            }
            continue;
        }
        PyObject *template = PyTuple_GET_ITEM(v, msg_at);
        PyObject *entry = PyDict_GetItemWithError(templates, template);
        if (entry == NULL || !PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 2
            || !PyLong_CheckExact(PyTuple_GET_ITEM(entry, 0))
            || PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 0)) != n_args) {
            PyErr_Clear();
            break; /* a template not learned yet, not joinable, or another count */
        }
        PyObject *joined = PyDict_GetItemWithError(formats, template);
        if (joined == NULL || !PyUnicode_CheckExact(joined)) {
            PyErr_Clear();
            break; /* its format for this time stamp is not made yet */
        }
        /* the getter, the format and the record are held: a field's __str__ may be
         * user code */
        PyObject *getter = PyTuple_GET_ITEM(entry, 1);
        Py_INCREF(getter);
        Py_INCREF(joined);
        Py_INCREF(v);
        int rc = formats_one(joined, getter, v, out);
        Py_DECREF(v);
        Py_DECREF(joined);
        Py_DECREF(getter);
        if (rc < 0) {
            PyErr_Clear();
            break;
        }
    }
    return PyLong_FromSsize_t(i);
}

/* ---- json_run -------------------------------------------------------------------------
 *
 * json_run(items, start, keys, encode) -> (stop, bytes): HTTPSink(json_batch=True)'s
 * inner loop. Each common frozen record from items[start] on is written as the JSON
 * object json.dumps(frozen_dict(v), default=str, separators=(",", ":")) writes, and
 * the objects are joined by ","; it stops at the first record that is not the common
 * case (a LogRecord, an exception or stack text, unmerged arguments, a value that is
 * not a str, int, float, bool or None, a message that does not merge), which the
 * Python loop then encodes, and returns where it stopped. keys[k] is the text before
 * field k's value ('{"name":', ',"msg":', ...); encode is json's
 * encode_basestring_ascii. The output is ASCII, as json.dumps writes by default.
 */
typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

/* Room for n more bytes; -1 (MemoryError) when there is none */
static int
buf_reserve(Buf *b, Py_ssize_t n)
{
    if (b->len + n <= b->cap) {
        return 0;
    }
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) {
        cap *= 2;
    }
    char *data = PyMem_Realloc(b->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int
buf_put(Buf *b, const char *text, Py_ssize_t n)
{
    if (buf_reserve(b, n) < 0) {
        return -1;
    }
    memcpy(b->data + b->len, text, (size_t)n);
    b->len += n;
    return 0;
}

static int
buf_put_ascii(Buf *b, PyObject *text)
{
    /* text is what repr() or encode_basestring_ascii returned: ASCII */
    if (text == NULL) {
        return -1;
    }
    Py_ssize_t n;
    const char *p = PyUnicode_AsUTF8AndSize(text, &n);
    int rc = p == NULL ? -1 : buf_put(b, p, n);
    Py_DECREF(text);
    return rc;
}

/* Where the text of the values one json_run call has written is in its buffer, by the
 * value's address: the records of one call site share their name, level, path,
 * function, thread and process objects, and each is encoded once per call, then
 * copied. Only values the items hold are entered (they stay alive for the whole call,
 * so an address is never reused), and a record that is taken back empties it. */
#define JSON_CACHE 64
typedef struct {
    PyObject *key[JSON_CACHE];
    Py_ssize_t at[JSON_CACHE];
    Py_ssize_t len[JSON_CACHE];
} JsonCache;

/* The JSON string of ASCII text, as json.dumps (ensure_ascii) writes it: printable
 * ASCII but '"' and '\\' as is, the usual short escapes, \\u00XX for the rest */
static int
json_ascii(Buf *b, const unsigned char *p, Py_ssize_t n)
{
    if (buf_reserve(b, 6 * n + 2) < 0) {
        return -1;
    }
    char *out = b->data + b->len;
    *out++ = '"';
    for (Py_ssize_t k = 0; k < n; k++) {
        unsigned char c = p[k];
        if (c >= ' ' && c <= '~' && c != '"' && c != '\\') {
            *out++ = (char)c;
            continue;
        }
        *out++ = '\\';
        switch (c) {
        case '"': *out++ = '"'; break;
        case '\\': *out++ = '\\'; break;
        case '\b': *out++ = 'b'; break;
        case '\f': *out++ = 'f'; break;
        case '\n': *out++ = 'n'; break;
        case '\r': *out++ = 'r'; break;
        case '\t': *out++ = 't'; break;
        default:
            *out++ = 'u';
            *out++ = '0';
            *out++ = '0';
            *out++ = "0123456789abcdef"[c >> 4];
            *out++ = "0123456789abcdef"[c & 15];
        }
    }
    *out++ = '"';
    b->len = out - b->data;
    return 0;
}

/* json_run's keys as UTF-8, looked up once a call */
#define JSON_KEYS_MAX 64
typedef struct {
    const char *text[JSON_KEYS_MAX];
    Py_ssize_t len[JSON_KEYS_MAX];
} JsonKeys;

/* 1: written; 0: not a common value (nothing written); -1: an error */
static int
json_value(Buf *b, PyObject *v, PyObject *encode, JsonCache *cache)
{
    if (v == Py_None) {
        return buf_put(b, "null", 4) < 0 ? -1 : 1;
    }
    if (v == Py_True) {
        return buf_put(b, "true", 4) < 0 ? -1 : 1;
    }
    if (v == Py_False) {
        return buf_put(b, "false", 5) < 0 ? -1 : 1;
    }
    if (PyFloat_CheckExact(v)) {
        /* a record's floats are its own: not worth a cache slot */
        double d = PyFloat_AS_DOUBLE(v);
        if (d != d) {
            return buf_put(b, "NaN", 3) < 0 ? -1 : 1;
        }
        if (d == Py_HUGE_VAL) {
            return buf_put(b, "Infinity", 8) < 0 ? -1 : 1;
        }
        if (d == -Py_HUGE_VAL) {
            return buf_put(b, "-Infinity", 9) < 0 ? -1 : 1;
        }
        if (short_float_repr) {
            char digits[32];
            Py_ssize_t n = shortest_repr(d, digits);
            return buf_put(b, digits, n) < 0 ? -1 : 1;
        }
        return buf_put_ascii(b, PyFloat_Type.tp_repr(v)) < 0 ? -1 : 1;
    }
    size_t slot = ((size_t)(uintptr_t)v >> 4) % JSON_CACHE;
    if (cache != NULL && cache->key[slot] == v) {
        /* a copy of its first text: reserved first, as the buffer may move */
        Py_ssize_t n = cache->len[slot];
        if (buf_reserve(b, n) < 0) {
            return -1;
        }
        memcpy(b->data + b->len, b->data + cache->at[slot], (size_t)n);
        b->len += n;
        return 1;
    }
    Py_ssize_t at = b->len;
    int rc;
    if (PyUnicode_CheckExact(v) && PyUnicode_IS_ASCII(v)) {
        rc = json_ascii(b, PyUnicode_1BYTE_DATA(v), PyUnicode_GET_LENGTH(v));
    }
    else if (PyUnicode_CheckExact(v)) {
        PyObject *text = PyObject_CallOneArg(encode, v);
        if (text != NULL && !PyUnicode_Check(text)) { /* encode was replaced by something odd */
            Py_DECREF(text);
            PyErr_SetString(PyExc_TypeError, "json_run(): encode must return a str");
            return -1;
        }
        rc = buf_put_ascii(b, text);
    }
    else if (PyLong_CheckExact(v)) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (x == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (overflow) {
            PyObject *text = PyLong_Type.tp_repr(v);
            if (text == NULL && PyErr_ExceptionMatches(PyExc_ValueError)) {
                /* past the interpreter's int digit limit: not this record alone's
                 * batch to fail; the Python path takes it and reports it */
                PyErr_Clear();
                return 0;
            }
            rc = buf_put_ascii(b, text);
        }
        else {
            char digits[24];
            rc = buf_put(b, digits, decimal_text(x, 0, 0, digits));
        }
    }
    else {
        return 0;
    }
    if (rc < 0) {
        return -1;
    }
    if (cache != NULL) {
        cache->key[slot] = v;
        cache->at[slot] = at;
        cache->len[slot] = b->len - at;
    }
    return 1;
}

/* The extra= names of a frozen record (borrowed; NULL: none) and its message merged
 * with the arguments the shim deferred (a new reference; NULL: none deferred).
 * 1: found; 0: not the common case (arguments that do not merge: the Python path
 * reports them); -1: an error */
static int
frozen_message(PyObject *v, PyObject **names, PyObject **merged)
{
    Py_ssize_t size = PyTuple_GET_SIZE(v);
    *names = NULL;
    *merged = NULL;
    Py_ssize_t n_args = size - n_fields;
    if (n_args > 0) {
        PyObject *last = PyTuple_GET_ITEM(v, size - 1);
        if (PyTuple_CheckExact(last)) { /* extra= values and their names follow */
            *names = last;
            n_args -= 1 + PyTuple_GET_SIZE(last);
            if (n_args < 0) {
                return 0;
            }
        }
    }
    if (n_args == 0) {
        return 1;
    }
    PyObject *msg = PyTuple_GET_ITEM(v, msg_at);
    if (!PyUnicode_CheckExact(msg)) {
        return 0;
    }
    PyObject *deferred = PyTuple_GetSlice(v, n_fields, n_fields + n_args);
    if (deferred == NULL) {
        return -1;
    }
    PyObject *text = percent(msg, deferred);
    Py_DECREF(deferred);
    if (text == NULL) {
        PyErr_Clear(); /* kept unmerged: the Python loop reports it */
        return 0;
    }
    if (!PyUnicode_CheckExact(text)) {
        Py_DECREF(text);
        return 0;
    }
    *merged = text;
    return 1;
}

/* Where each standard field of the last record json_run wrote is in its buffer, from
 * its key to the end of its value: consecutive records of one call site share most of
 * their values (name, level, path, function, thread, process: the same objects), and
 * a run of fields whose values are the previous record's objects is written as one
 * copy of that record's text. The message is always encoded: one format string is
 * merged with other arguments each time. rec is held while its spans are in use. */
typedef struct {
    PyObject *rec;
    Py_ssize_t start[JSON_KEYS_MAX];
    Py_ssize_t end[JSON_KEYS_MAX];
} JsonPrev;

/* Copies the previous record's text of fields [from_k, to_k) (a run of fields whose
 * spans follow each other) and moves their spans to the copy */
static int
json_copy_run(Buf *b, JsonPrev *prev, Py_ssize_t from_k, Py_ssize_t to_k)
{
    Py_ssize_t from = prev->start[from_k], n = prev->end[to_k - 1] - from;
    if (buf_reserve(b, n) < 0) {
        return -1;
    }
    memcpy(b->data + b->len, b->data + from, (size_t)n);
    Py_ssize_t shift = b->len - from;
    for (Py_ssize_t k = from_k; k < to_k; k++) {
        prev->start[k] += shift;
        prev->end[k] += shift;
    }
    b->len += n;
    return 0;
}

/* 1: the record was written; 0: not the common case (b is as it was); -1: error */
static int
json_record(Buf *b, PyObject *v, const JsonKeys *keys, PyObject *encode, int first,
            JsonCache *cache, JsonPrev *prev)
{
    Py_ssize_t size = PyTuple_GET_SIZE(v);
    if (size < n_fields || PyTuple_GET_ITEM(v, exc_text_at) != Py_None
        || PyTuple_GET_ITEM(v, exc_info_at) != Py_None
        || PyTuple_GET_ITEM(v, stack_info_at) != Py_None
        || !no_args(PyTuple_GET_ITEM(v, args_at))) {
        return 0;
    }
    PyObject *names, *merged;
    int found = frozen_message(v, &names, &merged);
    if (found != 1) {
        return found;
    }
    Py_ssize_t mark = b->len;
    int rc = 1;
    if (!first && buf_put(b, ",", 1) < 0) {
        rc = -1;
    }
    /* the fields [run, k) are the previous record's values, to be copied at once */
    PyObject *last = prev->rec;
    Py_ssize_t run = -1;
    for (Py_ssize_t k = 0; rc == 1 && k < n_fields; k++) {
        PyObject *x = PyTuple_GET_ITEM(v, k);
        if (last != NULL && k != msg_at && x == PyTuple_GET_ITEM(last, k)) {
            if (run < 0) {
                run = k;
            }
            continue;
        }
        if (run >= 0) {
            if (json_copy_run(b, prev, run, k) < 0) {
                rc = -1;
                break;
            }
            run = -1;
        }
        prev->start[k] = b->len;
        if (buf_put(b, keys->text[k], keys->len[k]) < 0) {
            rc = -1;
            break;
        }
        if (k == args_at && x != Py_None) {
            rc = buf_put(b, "[]", 2) < 0 ? -1 : 1; /* no_args(): the empty tuple */
        }
        else {
            /* a merged message is made here and freed after: never cached */
            rc = k == msg_at && merged != NULL ? json_value(b, merged, encode, NULL)
                                              : json_value(b, x, encode, cache);
        }
        prev->end[k] = b->len;
    }
    if (rc == 1 && run >= 0 && json_copy_run(b, prev, run, n_fields) < 0) {
        rc = -1;
    }
    if (names != NULL && rc == 1) {
        Py_ssize_t n_extra = PyTuple_GET_SIZE(names);
        Py_ssize_t at = size - 1 - n_extra;
        for (Py_ssize_t k = 0; rc == 1 && k < n_extra; k++) {
            PyObject *name = PyTuple_GET_ITEM(names, k);
            if (!PyUnicode_CheckExact(name)) {
                rc = 0;
                break;
            }
            if (buf_put(b, ",", 1) < 0 || json_value(b, name, encode, cache) < 0
                || buf_put(b, ":", 1) < 0) {
                rc = -1;
                break;
            }
            rc = json_value(b, PyTuple_GET_ITEM(v, at + k), encode, cache);
        }
    }
    if (rc == 1 && buf_put(b, "}", 1) < 0) {
        rc = -1;
    }
    Py_XDECREF(merged);
    if (rc != 1) {
        b->len = mark; /* nothing of this record stays */
        if (cache != NULL) {
            memset(cache->key, 0, sizeof cache->key); /* its texts may have been there */
        }
        Py_CLEAR(prev->rec); /* its spans were being moved to this record's */
    }
    else {
        Py_INCREF(v);
        Py_XSETREF(prev->rec, v);
    }
    return rc;
}

/* Where a *_run call starts (its start argument), once configure() has run; -1 with
 * an exception set when it has not, or start is not an int >= 0 */
static Py_ssize_t
run_start(const char *name, PyObject *start)
{
    if (fields == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups.configure() was not called");
        return -1;
    }
    Py_ssize_t i = PyLong_AsSsize_t(start);
    if (i < 0 && !PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError, "%s(): start < 0", name);
    }
    return i < 0 ? -1 : i;
}

static PyObject *
json_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "json_run() takes 4 arguments");
        return NULL;
    }
    PyObject *items = args[0], *keys = args[2], *encode = args[3];
    if (!PyList_CheckExact(items) || !PyTuple_CheckExact(keys)) {
        PyErr_SetString(PyExc_TypeError, "json_run(): unexpected argument types");
        return NULL;
    }
    Py_ssize_t i = run_start("json_run", args[1]);
    if (i < 0) {
        return NULL;
    }
    if (PyTuple_GET_SIZE(keys) != n_fields || n_fields > JSON_KEYS_MAX) {
        PyErr_SetString(PyExc_ValueError, "json_run(): one key per standard field");
        return NULL;
    }
    JsonKeys key_texts;
    for (Py_ssize_t k = 0; k < n_fields; k++) {
        PyObject *key = PyTuple_GET_ITEM(keys, k);
        if (!PyUnicode_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "json_run(): keys must be str");
            return NULL;
        }
        /* kept alive by keys, which the caller holds for the call */
        key_texts.text[k] = PyUnicode_AsUTF8AndSize(key, &key_texts.len[k]);
        if (key_texts.text[k] == NULL) {
            return NULL;
        }
    }
    Buf b = {NULL, 0, 0};
    JsonCache cache;
    memset(&cache, 0, sizeof cache);
    JsonPrev prev;
    prev.rec = NULL;
    Py_ssize_t start = i;
    for (; i < PyList_GET_SIZE(items); i++) {
        PyObject *v = PyList_GET_ITEM(items, i);
        if (!PyTuple_CheckExact(v)) {
            break;
        }
        Py_INCREF(v); /* held: encode may run Python code */
        int rc = json_record(&b, v, &key_texts, encode, i == start, &cache, &prev);
        Py_DECREF(v);
        if (rc < 0) {
            Py_XDECREF(prev.rec);
            PyMem_Free(b.data);
            return NULL;
        }
        if (rc == 0) {
            break;
        }
    }
    Py_XDECREF(prev.rec);
    PyObject *out = PyBytes_FromStringAndSize(b.data ? b.data : "", b.len);
    PyMem_Free(b.data);
    if (out == NULL) {
        return NULL;
    }
    return Py_BuildValue("(nN)", i, out);
}

static Py_ssize_t varint_size(uint64_t n);

/* Writes n as a protobuf varint at p (room for 10 bytes); returns the end */
static char *
varint_at(char *p, uint64_t n)
{
    while (n > 0x7F) {
        *p++ = (char)((n & 0x7F) | 0x80);
        n >>= 7;
    }
    *p++ = (char)n;
    return p;
}

/* What a new scope adds to a request: its name's UTF-8 bytes and the framing around
 * its records in either encoding (protobuf's few bytes; JSON's
 * {"scope":{"name":...},"logRecords":[...]}, 36 bytes); sinks/otlp.py's _SCOPE_FRAMING */
#define SCOPE_FRAMING 40

static Py_ssize_t
scope_cost(PyObject *scope)
{
    Py_ssize_t n;
    if (PyUnicode_IS_ASCII(scope)) {
        return PyUnicode_GET_LENGTH(scope) + SCOPE_FRAMING;
    }
    if (PyUnicode_AsUTF8AndSize(scope, &n) == NULL) {
        PyErr_Clear(); /* a name UTF-8 cannot hold: the encoding reports it, count the most */
        n = 4 * PyUnicode_GET_LENGTH(scope);
    }
    return n + SCOPE_FRAMING;
}

/* otlp_group(chunk, limit) -> (groups, n) or None
 *
 * OTLPSink._body's loop: chunk is a list of (item, scope, message bytes); the longest
 * front of it whose request stays within limit bytes (each message costs its length
 * and its field head, each new scope scope_cost()), its messages grouped
 * by scope in order (a dict scope -> list of bytes), and how many that is (at least
 * one). None when an entry is not such a tuple: the Python loop does it.
 */
static PyObject *
otlp_group(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "otlp_group(chunk: list, limit: int)");
        return NULL;
    }
    PyObject *chunk = args[0];
    Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(chunk); k++) {
        PyObject *entry = PyList_GET_ITEM(chunk, k);
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 3
            || !PyUnicode_CheckExact(PyTuple_GET_ITEM(entry, 1))
            || !PyBytes_CheckExact(PyTuple_GET_ITEM(entry, 2))) {
            Py_RETURN_NONE;
        }
    }
    PyObject *groups = PyDict_New();
    if (groups == NULL) {
        return NULL;
    }
    Py_ssize_t size = 0, n = 0;
    for (; n < PyList_GET_SIZE(chunk); n++) {
        PyObject *entry = PyList_GET_ITEM(chunk, n);
        PyObject *scope = PyTuple_GET_ITEM(entry, 1), *encoded = PyTuple_GET_ITEM(entry, 2);
        Py_ssize_t length = PyBytes_GET_SIZE(encoded);
        Py_ssize_t cost = length + 1 + varint_size((uint64_t)length);
        PyObject *logs = PyDict_GetItemWithError(groups, scope); /* borrowed */
        if (logs == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(groups);
                return NULL;
            }
            cost += scope_cost(scope);
        }
        if (n && size + cost > limit) {
            break;
        }
        if (logs == NULL) {
            logs = PyList_New(0);
            int rc = logs == NULL ? -1 : PyDict_SetItem(groups, scope, logs);
            Py_XDECREF(logs); /* the dict holds it */
            if (rc < 0) {
                Py_DECREF(groups);
                return NULL;
            }
        }
        if (PyList_Append(logs, encoded) < 0) {
            Py_DECREF(groups);
            return NULL;
        }
        size += cost;
    }
    return Py_BuildValue("(Nn)", groups, n);
}

/* otlp_frames(logs) -> bytes: each message as a ScopeLogs.log_records field (tag 0x12,
 * its length as a varint, the message), joined: _otlp_map._log_records; None when a
 * message is not bytes */
static PyObject *
otlp_frames(PyObject *module, PyObject *logs)
{
    if (!PyList_CheckExact(logs)) {
        PyErr_SetString(PyExc_TypeError, "otlp_frames(): logs must be a list of bytes");
        return NULL;
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(logs); k++) {
        PyObject *log = PyList_GET_ITEM(logs, k);
        if (!PyBytes_CheckExact(log)) {
            Py_RETURN_NONE; /* another bytes-like object: the Python join takes it */
        }
        total += 1 + varint_size((uint64_t)PyBytes_GET_SIZE(log)) + PyBytes_GET_SIZE(log);
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) {
        return NULL;
    }
    char *p = PyBytes_AS_STRING(out);
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(logs); k++) {
        PyObject *log = PyList_GET_ITEM(logs, k);
        *p++ = 0x12;
        p = varint_at(p, (uint64_t)PyBytes_GET_SIZE(log));
        memcpy(p, PyBytes_AS_STRING(log), (size_t)PyBytes_GET_SIZE(log));
        p += PyBytes_GET_SIZE(log);
    }
    return out;
}

/* syslog_run(texts, items, start, heads, at, framing) -> (stop, frames)
 *
 * SysLogSink's framing of formatted records: from texts[start] on, the bytes
 * frame((heads[items[i][at]] + texts[i]).encode()) for framing 0 (RFC 6587 octet
 * counting: b"%d " % len(msg) + msg), 1 (non-transparent: msg.rstrip(b"\n\0") + b"\n"),
 * 2 (NUL-terminated) or 3 (as it is), until the first record that is not the common
 * case: a text or level name that is not a str, an item that is not a frozen tuple, a
 * level without a head in heads, text that is not UTF-8. The Python loop takes that
 * one (asking the priority hooks for a new level). Returns (where it stopped, the
 * frames).
 */
static PyObject *
syslog_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "syslog_run() takes 6 arguments");
        return NULL;
    }
    PyObject *texts = args[0], *items = args[1], *heads = args[3];
    Py_ssize_t at = PyLong_AsSsize_t(args[4]);
    long framing = PyLong_AsLong(args[5]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (!PyList_CheckExact(texts) || !PyList_CheckExact(items) || !PyDict_CheckExact(heads)
        || at < 0 || framing < 0 || framing > 3) {
        PyErr_SetString(PyExc_TypeError, "syslog_run(): unexpected arguments");
        return NULL;
    }
    Py_ssize_t i = run_start("syslog_run", args[2]);
    if (i < 0) {
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        return NULL;
    }
    Py_ssize_t n = Py_MIN(PyList_GET_SIZE(texts), PyList_GET_SIZE(items));
    for (; i < n; i++) {
        PyObject *text = PyList_GET_ITEM(texts, i), *item = PyList_GET_ITEM(items, i);
        if (!PyUnicode_CheckExact(text) || !PyTuple_CheckExact(item)
            || PyTuple_GET_SIZE(item) <= at) {
            break;
        }
        PyObject *level = PyTuple_GET_ITEM(item, at);
        if (!PyUnicode_CheckExact(level)) {
            break;
        }
        PyObject *head = PyDict_GetItemWithError(heads, level); /* borrowed */
        if (head == NULL || !PyUnicode_CheckExact(head)) {
            PyErr_Clear();
            break; /* a level the Python loop asks the hooks about */
        }
        Py_ssize_t hn, tn;
        const char *h = PyUnicode_AsUTF8AndSize(head, &hn);
        const char *t = h == NULL ? NULL : PyUnicode_AsUTF8AndSize(text, &tn);
        if (t == NULL) {
            PyErr_Clear();
            break; /* lone surrogates: .encode() raises there, for the Python loop */
        }
        char count[24];
        int cn = 0;
        Py_ssize_t tail = 0;
        if (framing == 0) {
            cn = snprintf(count, sizeof count, "%zd ", hn + tn);
        }
        else if (framing == 1) {
            /* rstrip(b"\n\0") over head + text, then one LF */
            while (tn > 0 && (t[tn - 1] == '\n' || t[tn - 1] == '\0')) {
                tn--;
            }
            while (tn == 0 && hn > 0 && (h[hn - 1] == '\n' || h[hn - 1] == '\0')) {
                hn--;
            }
            tail = 1;
        }
        else if (framing == 2) {
            tail = 1;
        }
        PyObject *frame = PyBytes_FromStringAndSize(NULL, cn + hn + tn + tail);
        if (frame == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        char *p = PyBytes_AS_STRING(frame);
        memcpy(p, count, (size_t)cn);
        memcpy(p + cn, h, (size_t)hn);
        memcpy(p + cn + hn, t, (size_t)tn);
        if (tail) {
            p[cn + hn + tn] = framing == 1 ? '\n' : '\0';
        }
        int rc = PyList_Append(out, frame);
        Py_DECREF(frame);
        if (rc < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return Py_BuildValue("(nN)", i, out);
}

/* otlp_run(items, start, observed_ns, pid, max_bytes, at, skip, trace)
 *
 * The OTLP LogRecord message of each common frozen record from items[start], the
 * bytes _otlp_map.protobuf_frozen writes for it, as (item, scope, bytes) tuples,
 * until the first record that is not the common case: a LogRecord, exception or stack
 * text, arguments that do not merge, a value of another type than str, int, bool,
 * float or None, a trace id among its fields, text that is not UTF-8, or a message
 * larger than max_bytes. The Python loop takes that one. at: the frozen positions of
 * name, pathname, funcName, lineno, thread, threadName, process, levelno and
 * levelname; skip: the names that are not extra= attributes; trace: those of a trace
 * id. Returns (where it stopped, the tuples).
 */
enum { AT_NAME, AT_PATH, AT_FUNC, AT_LINE, AT_THREAD, AT_THREAD_NAME, AT_PROCESS,
       AT_LEVELNO, AT_LEVELNAME, N_AT };

static int
pb_byte(Buf *b, unsigned char c)
{
    return buf_put(b, (const char *)&c, 1);
}

static int
pb_varint(Buf *b, uint64_t n)
{
    char out[10];
    return buf_put(b, out, varint_at(out, n) - out);
}

static int
pb_fixed64(Buf *b, unsigned char tag, uint64_t n)
{
    char out[9];
    out[0] = (char)tag;
    for (int k = 0; k < 8; k++) {
        out[1 + k] = (char)((n >> (8 * k)) & 0xFF);
    }
    return buf_put(b, out, 9);
}

static Py_ssize_t
varint_size(uint64_t n)
{
    Py_ssize_t k = 1;
    while (n > 0x7F) {
        n >>= 7;
        k++;
    }
    return k;
}

/* a length-delimited field of n bytes: its tag and length */
static int
pb_head(Buf *b, unsigned char tag, Py_ssize_t n)
{
    return pb_byte(b, tag) < 0 || pb_varint(b, (uint64_t)n) < 0 ? -1 : 0;
}

/* A length-delimited field (tag, length, bytes) at q, which has room; returns the end */
static inline char *
field_at(char *q, unsigned char tag, const char *p, Py_ssize_t n)
{
    *q++ = (char)tag;
    q = varint_at(q, (uint64_t)n);
    memcpy(q, p, (size_t)n);
    return q + n;
}

/* A length-delimited field written with one capacity check */
static int
pb_string(Buf *b, unsigned char tag, const char *p, Py_ssize_t n)
{
    if (buf_reserve(b, 11 + n) < 0) {
        return -1;
    }
    b->len = field_at(b->data + b->len, tag, p, n) - b->data;
    return 0;
}

/* 1: UTF-8 found; 0: not UTF-8 (lone surrogates: the Python path replaces them) */
static int
utf8_of(PyObject *s, const char **p, Py_ssize_t *n)
{
    if (PyUnicode_CheckExact(s) && PyUnicode_IS_COMPACT_ASCII(s)) {
        /* the common case without a call: an ASCII string's characters are its UTF-8 */
        *p = (const char *)PyUnicode_DATA(s);
        *n = PyUnicode_GET_LENGTH(s);
        return 1;
    }
    *p = PyUnicode_AsUTF8AndSize(s, n);
    if (*p == NULL) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* An AnyValue's bytes: 1 written, 0 not a common value (b unchanged), -1 error */
static int
pb_any(Buf *b, PyObject *v)
{
    if (v == Py_None) {
        return 1;
    }
    if (v == Py_True || v == Py_False) {
        return buf_put(b, v == Py_True ? "\x10\x01" : "\x10\x00", 2) < 0 ? -1 : 1;
    }
    if (PyUnicode_CheckExact(v)) {
        const char *p;
        Py_ssize_t n;
        if (!utf8_of(v, &p, &n)) {
            return 0;
        }
        return pb_string(b, 0x0A, p, n) < 0 ? -1 : 1;
    }
    if (PyLong_CheckExact(v)) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow) {
            return 0; /* beyond int64: a string value, written by the Python path */
        }
        if (x == -1 && PyErr_Occurred()) {
            return -1;
        }
        return pb_byte(b, 0x18) < 0 || pb_varint(b, (uint64_t)x) < 0 ? -1 : 1;
    }
    if (PyFloat_CheckExact(v)) {
        double d = PyFloat_AS_DOUBLE(v);
        uint64_t bits;
        memcpy(&bits, &d, 8);
        return pb_fixed64(b, 0x21, bits) < 0 ? -1 : 1;
    }
    return 0;
}

/* An attribute (tag 0x32 in a LogRecord): KeyValue{key = 1, value = 2} */
static int
pb_attribute(Buf *b, const char *key, Py_ssize_t key_len, PyObject *v, Buf *scratch)
{
    Py_ssize_t kv;
    if (PyUnicode_CheckExact(v)) {
        /* most attributes: AnyValue{string_value = 1} written in place, its size known */
        const char *p;
        Py_ssize_t n;
        if (!utf8_of(v, &p, &n)) {
            return 0;
        }
        Py_ssize_t value = 1 + varint_size((uint64_t)n) + n;
        kv = 1 + varint_size((uint64_t)key_len) + key_len + 1 + varint_size((uint64_t)value)
             + value;
        if (buf_reserve(b, 1 + varint_size((uint64_t)kv) + kv) < 0) {
            return -1;
        }
        char *q = b->data + b->len;
        *q++ = 0x32;
        q = varint_at(q, (uint64_t)kv);
        q = field_at(q, 0x0A, key, key_len);
        *q++ = 0x12;
        q = varint_at(q, (uint64_t)value);
        b->len = field_at(q, 0x0A, p, n) - b->data;
        return 1;
    }
    scratch->len = 0;
    int rc = pb_any(scratch, v);
    if (rc != 1) {
        return rc;
    }
    kv = 1 + varint_size((uint64_t)key_len) + key_len + 1 + varint_size((uint64_t)scratch->len)
         + scratch->len;
    if (pb_head(b, 0x32, kv) < 0 || pb_string(b, 0x0A, key, key_len) < 0
        || pb_string(b, 0x12, scratch->data ? scratch->data : "", scratch->len) < 0) {
        return -1;
    }
    return 1;
}

static int
is_str_or_none(PyObject *v)
{
    return v == Py_None || PyUnicode_CheckExact(v);
}

static long
severity_number(long levelno)
{
    if (levelno <= 0) {
        return 0;
    }
    if (levelno < 10) {
        return 1;
    }
    long base = levelno / 10 < 5 ? levelno / 10 : 5;
    long step = levelno - 10 * base < 3 ? levelno - 10 * base : 3;
    return 1 + 4 * base + step;
}

/* 1: the record's message is in b; 0: not the common case; -1: error */
static int
otlp_record(Buf *b, Buf *scratch, PyObject *v, const Py_ssize_t *at, const char *observed,
            PyObject *pid, PyObject *skip, PyObject *trace)
{
    Py_ssize_t size = PyTuple_GET_SIZE(v);
    if (size < n_fields) {
        return 0;
    }
    PyObject *std[N_AT];
    for (int k = 0; k < N_AT; k++) {
        std[k] = PyTuple_GET_ITEM(v, at[k]);
    }
    PyObject *msg = PyTuple_GET_ITEM(v, msg_at), *created = PyTuple_GET_ITEM(v, created_at);
    int flagged = 0;
    PyObject *checked[] = {PyTuple_GET_ITEM(v, exc_text_at), PyTuple_GET_ITEM(v, stack_info_at),
                           PyTuple_GET_ITEM(v, args_at)};
    for (int k = 0; k < 3; k++) {
        int truth = PyObject_IsTrue(checked[k]);
        if (truth < 0) {
            PyErr_Clear();
            return 0;
        }
        flagged |= truth;
    }
    if (flagged || !PyUnicode_CheckExact(msg) || !PyLong_CheckExact(std[AT_LEVELNO])
        || !PyUnicode_CheckExact(std[AT_LEVELNAME]) || !PyLong_CheckExact(std[AT_LINE])
        || !PyUnicode_CheckExact(std[AT_NAME]) || !is_str_or_none(std[AT_PATH])
        || !is_str_or_none(std[AT_FUNC]) || !is_str_or_none(std[AT_THREAD_NAME])
        || (std[AT_THREAD] != Py_None && !PyLong_CheckExact(std[AT_THREAD]))
        || (std[AT_PROCESS] != Py_None && !PyLong_CheckExact(std[AT_PROCESS]))
        || !PyFloat_CheckExact(created)) {
        return 0;
    }
    double ns = PyFloat_AS_DOUBLE(created) * 1e9;
    if (!(ns >= 0.0 && ns < 18446744073709551616.0)) {
        return 0; /* negative or NaN: the Python path reports it */
    }
    int overflow;
    long levelno = PyLong_AsLongAndOverflow(std[AT_LEVELNO], &overflow);
    if (overflow || (levelno == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    PyObject *names, *merged;
    int found = frozen_message(v, &names, &merged);
    if (found != 1) {
        return found;
    }
    if (merged != NULL) {
        msg = merged;
    }
    Py_ssize_t mark = b->len;
    int rc = 1;
    const char *p;
    Py_ssize_t n;
    /* time_unix_nano = 1, observed_time_unix_nano = 11, severity_number = 2 */
    if (pb_fixed64(b, 0x09, (uint64_t)ns) < 0 || buf_put(b, observed, 9) < 0
        || pb_byte(b, 0x10) < 0 || pb_varint(b, (uint64_t)severity_number(levelno)) < 0) {
        rc = -1;
    }
    /* severity_text = 3 */
    else if (!utf8_of(std[AT_LEVELNAME], &p, &n)) {
        rc = 0;
    }
    else if (pb_string(b, 0x1A, p, n) < 0) {
        rc = -1;
    }
    /* body = 5: AnyValue{string_value = 1} */
    else if (!utf8_of(msg, &p, &n)) {
        rc = 0;
    }
    else if (pb_head(b, 0x2A, 1 + varint_size((uint64_t)n) + n) < 0
             || pb_string(b, 0x0A, p, n) < 0) {
        rc = -1;
    }
#define SITE(key, at) {key, sizeof(key) - 1, at}
    static const struct {
        const char *key;
        Py_ssize_t len;
        int at;
    } site[] = {
        SITE("code.file.path", AT_PATH),     SITE("code.function.name", AT_FUNC),
        SITE("code.line.number", AT_LINE),   SITE("thread.id", AT_THREAD),
        SITE("thread.name", AT_THREAD_NAME), SITE("logger.name", AT_NAME),
    };
#undef SITE
    for (size_t k = 0; rc == 1 && k < sizeof site / sizeof site[0]; k++) {
        rc = pb_attribute(b, site[k].key, site[k].len, std[site[k].at], scratch);
    }
    if (rc == 1 && std[AT_PROCESS] != Py_None) {
        int differs = PyObject_RichCompareBool(std[AT_PROCESS], pid, Py_NE);
        if (differs < 0) {
            PyErr_Clear();
            rc = 0;
        }
        else if (differs) {
            rc = pb_attribute(b, "process.pid", 11, std[AT_PROCESS], scratch);
        }
    }
    if (names != NULL) {
        Py_ssize_t n_extra = PyTuple_GET_SIZE(names);
        Py_ssize_t first = size - 1 - n_extra;
        for (Py_ssize_t k = 0; rc == 1 && k < n_extra; k++) {
            PyObject *name = PyTuple_GET_ITEM(names, k);
            if (!PyUnicode_CheckExact(name)) {
                rc = 0;
                break;
            }
            int skipped = PySet_Contains(skip, name), traced = PySet_Contains(trace, name);
            if (skipped < 0 || traced < 0) {
                rc = -1;
                break;
            }
            if (traced) {
                rc = 0; /* a trace id: the Python path writes the trace fields */
                break;
            }
            if (skipped
                || (PyUnicode_GET_LENGTH(name) > 0 && PyUnicode_READ_CHAR(name, 0) == '_')) {
                continue;
            }
            if (!utf8_of(name, &p, &n)) {
                rc = 0;
                break;
            }
            rc = pb_attribute(b, p, n, PyTuple_GET_ITEM(v, first + k), scratch);
        }
    }
    Py_XDECREF(merged);
    if (rc != 1) {
        b->len = mark;
    }
    return rc;
}

static PyObject *
otlp_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "otlp_run() takes 8 arguments");
        return NULL;
    }
    PyObject *items = args[0], *pid = args[3], *positions = args[5], *skip = args[6],
             *trace = args[7];
    if (!PyList_CheckExact(items) || !PyTuple_CheckExact(positions)
        || PyTuple_GET_SIZE(positions) != N_AT || !PyAnySet_Check(skip)
        || !PyAnySet_Check(trace)) {
        PyErr_SetString(PyExc_TypeError, "otlp_run(): unexpected argument types");
        return NULL;
    }
    Py_ssize_t i = run_start("otlp_run", args[1]);
    if (i < 0) {
        return NULL;
    }
    Py_ssize_t at[N_AT];
    for (int k = 0; k < N_AT; k++) {
        at[k] = PyLong_AsSsize_t(PyTuple_GET_ITEM(positions, k));
        if (at[k] < 0 || at[k] >= n_fields) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "otlp_run(): a position out of range");
            }
            return NULL;
        }
    }
    Py_ssize_t max_bytes = PyLong_AsSsize_t(args[4]);
    unsigned long long observed_ns = PyLong_AsUnsignedLongLong(args[2]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    char observed[9];
    observed[0] = 0x59; /* observed_time_unix_nano = 11 (fixed64) */
    for (int k = 0; k < 8; k++) {
        observed[1 + k] = (char)((observed_ns >> (8 * k)) & 0xFF);
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        return NULL;
    }
    Buf b = {NULL, 0, 0}, scratch = {NULL, 0, 0};
    for (; i < PyList_GET_SIZE(items); i++) {
        PyObject *v = PyList_GET_ITEM(items, i);
        if (!PyTuple_CheckExact(v)) {
            break;
        }
        Py_INCREF(v); /* held: merging a message may run Python code */
        b.len = 0;
        int rc = otlp_record(&b, &scratch, v, at, observed, pid, skip, trace);
        PyObject *scope = rc == 1 ? PyTuple_GET_ITEM(v, at[AT_NAME]) : NULL;
        if (rc == 1 && b.len + scope_cost(scope) > max_bytes) {
            rc = 0; /* too large: the Python path reports it */
        }
        PyObject *entry = NULL;
        if (rc == 1) {
            entry = Py_BuildValue("(OOy#)", v, scope, b.data, b.len);
            if (entry == NULL || PyList_Append(out, entry) < 0) {
                rc = -1;
            }
            Py_XDECREF(entry);
        }
        Py_DECREF(v);
        if (rc < 0) {
            PyMem_Free(b.data);
            PyMem_Free(scratch.data);
            Py_DECREF(out);
            return NULL;
        }
        if (rc == 0) {
            break;
        }
    }
    PyMem_Free(b.data);
    PyMem_Free(scratch.data);
    return Py_BuildValue("(nN)", i, out);
}

static PyObject *
configure(PyObject *module, PyObject *names)
{
    if (!PyTuple_CheckExact(names)) {
        PyErr_SetString(PyExc_TypeError, "configure(): expected a tuple of field names");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    Py_ssize_t at = -1, m_at = -1, exc_at = -1, text_at = -1, stack_at = -1, c_at = -1,
               ms_at = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        if (!PyUnicode_CheckExact(name)) {
            PyErr_SetString(PyExc_TypeError, "configure(): field names must be str");
            return NULL;
        }
        if (PyUnicode_CompareWithASCIIString(name, "args") == 0) {
            at = i;
        }
        else if (PyUnicode_CompareWithASCIIString(name, "msg") == 0) {
            m_at = i;
        }
        else if (PyUnicode_CompareWithASCIIString(name, "exc_info") == 0) {
            exc_at = i;
        }
        else if (PyUnicode_CompareWithASCIIString(name, "exc_text") == 0) {
            text_at = i;
        }
        else if (PyUnicode_CompareWithASCIIString(name, "stack_info") == 0) {
            stack_at = i;
        }
        else if (PyUnicode_CompareWithASCIIString(name, "created") == 0) {
            c_at = i;
        }
        else if (PyUnicode_CompareWithASCIIString(name, "msecs") == 0) {
            ms_at = i;
        }
    }
    if (at < 0 || m_at < 0 || exc_at < 0 || text_at < 0 || stack_at < 0 || c_at < 0
        || ms_at < 0 || n > 64) {
        PyErr_SetString(PyExc_ValueError,
                        "configure(): at most 64 names, with msg, args, exc_info, exc_text, "
                        "stack_info, created and msecs");
        return NULL;
    }
    Py_ssize_t s_at[N_SHARED];
    for (int k = 0; k < N_SHARED; k++) {
        s_at[k] = -1;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(names, i), shared_names[k])
                == 0) {
                s_at[k] = i;
            }
        }
        if (s_at[k] < 0) {
            PyErr_Format(PyExc_ValueError, "configure(): no %s among the names",
                         shared_names[k]);
            return NULL;
        }
    }
    PyObject *standard = PySet_New(names);
    if (standard == NULL) {
        return NULL;
    }
    const char *cached[] = {"message", "asctime"}; /* what a formatter adds */
    for (int k = 0; k < 2; k++) {
        PyObject *name = PyUnicode_InternFromString(cached[k]);
        if (name == NULL || PySet_Add(standard, name) < 0) {
            Py_XDECREF(name);
            Py_DECREF(standard);
            return NULL;
        }
        Py_DECREF(name);
    }
    Py_XSETREF(not_extra, standard);
    Py_CLEAR(last_names);
    Py_INCREF(names);
    Py_XSETREF(fields, names);
    n_fields = n;
    args_at = at;
    msg_at = m_at;
    for (int k = 0; k < N_SHARED; k++) {
        shared_at[k] = s_at[k];
        Py_CLEAR(shared_last[k]);
    }
    exc_info_at = exc_at;
    exc_text_at = text_at;
    stack_info_at = stack_at;
    created_at = c_at;
    msecs_at = ms_at;
    Py_RETURN_NONE;
}

/* Some entries of a dict that a caller holds, read again only when the dict has
 * changed since they were read: on Python 3.10 and 3.11 every change of a dict renews
 * its ma_version_tag (the tag CPython's own global-lookup caches rely on), so an
 * unchanged tag means the entries are the same objects, still held by the dict; later
 * versions deprecate the tag, and there the entries are read each time. */
#define ENTRIES_MAX 3
typedef struct {
    PyObject *dict;                /* borrowed: the caller holds it */
    int n;
    PyObject *names[ENTRIES_MAX];  /* interned names */
    PyObject *values[ENTRIES_MAX]; /* borrowed from the dict; NULL: missing */
    uint64_t version;              /* the tag they were read at; 0: not read */
} Entries;

static void
entries_init(Entries *e, PyObject *dict, int n, PyObject *a, PyObject *b, PyObject *c)
{
    e->dict = dict;
    e->n = n;
    e->names[0] = a;
    e->names[1] = b;
    e->names[2] = c;
    e->version = 0;
}

/* 0: e->values[first:] are the dict's entries now (on 3.10/3.11 all of them are);
 * -1: an error (the next call reads again) */
static int
entries_read(Entries *e, int first)
{
#if PY_VERSION_HEX < 0x030C0000
    uint64_t version = ((PyDictObject *)e->dict)->ma_version_tag;
    if (version == e->version) {
        return 0;
    }
    first = 0;
#endif
    for (int i = first; i < e->n; i++) {
        e->values[i] = PyDict_GetItemWithError(e->dict, e->names[i]);
        if (e->values[i] == NULL && PyErr_Occurred()) {
            e->version = 0;
            return -1;
        }
    }
#if PY_VERSION_HEX < 0x030C0000
    /* the tag from before the reads: a change while reading reads them again */
    e->version = version;
#endif
    return 0;
}

/* Shim(handler, dispatcher, slow, trace_globals, switch, bound, record_type)
 *
 * QueueHandler.handle's hot path as one C call: installed as a plain QueueHandler's
 * "handle" (an instance attribute, so Logger.callHandlers calls it without a bound
 * method or a Python frame). A plain record - no handler filter, an exact LogRecord,
 * no context to carry, no bound fields, and what freeze_plain takes - is given to the
 * trace hook when one is set (as QueueHandler.handle does, after the filters; not when
 * _trace.gate shows an empty OpenTelemetry context, where _trace's own hook does
 * nothing), then frozen and appended to the dispatcher's queue as Dispatcher.submit
 * would: while it accepts and below its bound, waking the pump once per burst.
 * Everything else is handed to slow(record) (QueueHandler.handle itself), which
 * handles every record (calling the hook again for a record freeze_plain did not
 * take: it only sets the current span's ids, the same ones twice).
 */
typedef struct {
    PyObject_HEAD
    PyObject *handler;
    PyObject *dispatcher;
    PyObject *slow;
    PyObject *trace_globals; /* _trace's module dict: "hook", "gate", "gated" */
    PyObject *switch_;       /* _context._switch: .on while a context is captured */
    PyObject *bound;         /* the ContextVar of the bound fields */
    PyObject *record_type;   /* logging.LogRecord */
    /* What is read per record, held from the start: the instance dicts of the handler
     * ("filters"), the dispatcher ("_accepting", "_items", "_wake_pending") and the
     * switch ("on"), whose entries are read without the attribute protocol's type
     * walk (none of these names is a descriptor on its class); the dispatcher's queue
     * (checked per record to still be its "_items"), its bound method append and the
     * dispatcher's bound, which is set once */
    PyObject *handler_dict;
    PyObject *dispatcher_dict;
    PyObject *switch_dict;
    PyObject *items;
    PyObject *append;
    Py_ssize_t limit;
    vectorcallfunc vectorcall;
    /* the entries read per record, each dict's read again only when it has changed */
    Entries handler_e;    /* filters */
    Entries trace_e;      /* hook, gate, gated */
    Entries switch_e;     /* on */
    Entries dispatcher_e; /* _accepting, _items, _wake_pending */
} Shim;

static PyObject *s_filters, *s_hook, *s_gate, *s_gated, *s_on, *s_accepting, *s_items, *s_bound,
    *s_pending, *s_append, *s_submit, *s_wake_up, *s_handle_error;

static int
shim_traverse(Shim *self, visitproc visit, void *arg)
{
    Py_VISIT(self->handler);
    Py_VISIT(self->dispatcher);
    Py_VISIT(self->slow);
    Py_VISIT(self->trace_globals);
    Py_VISIT(self->switch_);
    Py_VISIT(self->bound);
    Py_VISIT(self->record_type);
    Py_VISIT(self->handler_dict);
    Py_VISIT(self->dispatcher_dict);
    Py_VISIT(self->switch_dict);
    Py_VISIT(self->items);
    Py_VISIT(self->append);
    return 0;
}

static int
shim_clear(Shim *self)
{
    Py_CLEAR(self->handler);
    Py_CLEAR(self->dispatcher);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->trace_globals);
    Py_CLEAR(self->switch_);
    Py_CLEAR(self->bound);
    Py_CLEAR(self->record_type);
    Py_CLEAR(self->handler_dict);
    Py_CLEAR(self->dispatcher_dict);
    Py_CLEAR(self->switch_dict);
    Py_CLEAR(self->items);
    Py_CLEAR(self->append);
    return 0;
}

static void
shim_dealloc(Shim *self)
{
    PyObject_GC_UnTrack(self);
    shim_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* 1: the record is the plain case, 0: it is not, -1: an error; *hook is the trace
 * hook to call first (a new reference) or NULL */
static int
shim_plain(Shim *self, PyObject *record, PyObject **hook_out)
{
    *hook_out = NULL;
    if (Py_TYPE(record) != (PyTypeObject *)self->record_type) {
        return 0;
    }
    if (entries_read(&self->handler_e, 0) < 0 || entries_read(&self->trace_e, 0) < 0
        || entries_read(&self->switch_e, 0) < 0) {
        return -1;
    }
    PyObject *filters = self->handler_e.values[0];
    if (filters == NULL || !PyList_CheckExact(filters) || PyList_GET_SIZE(filters) != 0) {
        return 0;
    }
    PyObject *hook = self->trace_e.values[0];
    if (hook == NULL || self->switch_e.values[0] != Py_False) {
        return 0;
    }
    PyObject *fields_bound;
    if (PyContextVar_Get(self->bound, Py_None, &fields_bound) < 0) {
        return -1;
    }
    int unbound = fields_bound == Py_None;
    Py_DECREF(fields_bound);
    if (unbound && hook != Py_None) {
        PyObject *gate = self->trace_e.values[1];
        if (self->trace_e.values[2] == hook && gate != NULL && PyContextVar_CheckExact(gate)) {
            /* _trace.gate: the hook itself returns at once while the OpenTelemetry
             * context is empty (no span: most logging calls), so is not called then */
            PyObject *context;
            if (PyContextVar_Get(gate, NULL, &context) < 0) {
                return -1;
            }
            int busy = context == NULL ? 0 : PyObject_IsTrue(context);
            Py_XDECREF(context);
            if (busy <= 0) {
                return busy < 0 ? -1 : 1;
            }
        }
        *hook_out = Py_NewRef(hook);
    }
    return unbound; /* bound fields (even none) travel on the pure-Python path */
}

/* Appends frozen to the dispatcher's queue: 1 done, 0 not the common case (the
 * caller submits it), -1 an error after the append (the record is queued) */
static int
shim_append(Shim *self, PyObject *frozen)
{
    PyObject *d = self->dispatcher;
    Entries *e = &self->dispatcher_e;
    if (entries_read(e, 0) < 0) {
        PyErr_Clear();
        return 0;
    }
    if (e->values[0] != Py_True) {
        return 0; /* not accepting: submit() gives it to the fallback */
    }
    if (e->values[1] != self->items) {
        return 0; /* another queue than the one held: submit() appends to it */
    }
    Py_ssize_t n = PyObject_Length(self->items);
    if (n < 0 || n >= self->limit) {
        PyErr_Clear();
        return 0; /* full: submit() applies the overflow policy */
    }
    PyObject *rv = PyObject_CallOneArg(self->append, frozen);
    if (rv == NULL) {
        PyErr_Clear();
        return 0; /* not appended: submit() tries */
    }
    Py_DECREF(rv);
    if (entries_read(e, 2) < 0) { /* _wake_pending, as it is after the append */
        return -1;
    }
    if (e->values[2] != Py_True) { /* no wake-up pending */
        rv = PyObject_CallMethodNoArgs(d, s_wake_up);
        if (rv == NULL) {
            return -1;
        }
        Py_DECREF(rv);
    }
    return 1;
}

static PyObject *
shim_call(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Shim *self = (Shim *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
    }
    PyObject *record = args[0];
    PyObject *hook;
    int plain = shim_plain(self, record, &hook);
    if (plain < 0) {
        PyErr_Clear(); /* the Python path meets the same and handles it */
    }
    if (plain <= 0) {
        return PyObject_CallOneArg(self->slow, record);
    }
    if (hook != NULL) {
        /* the caller's span, read at the call (see _trace) */
        PyObject *rv = PyObject_CallOneArg(hook, record);
        Py_DECREF(hook);
        if (rv == NULL) {
            return NULL; /* as QueueHandler.handle, which does not catch it either */
        }
        Py_DECREF(rv);
    }
    PyObject *d = PyObject_GenericGetDict(record, NULL);
    if (d == NULL) {
        PyErr_Clear();
        return PyObject_CallOneArg(self->slow, record);
    }
    PyObject *frozen = freeze_plain(NULL, d);
    Py_DECREF(d);
    if (frozen == NULL || frozen == Py_None) {
        if (frozen == NULL) {
            PyErr_Clear();
        }
        Py_XDECREF(frozen);
        return PyObject_CallOneArg(self->slow, record);
    }
    int done = shim_append(self, frozen);
    if (done == 0) {
        /* closed, full or not a Dispatcher's queue: its submit() applies the policy */
        PyObject *rv = PyObject_CallMethodOneArg(self->dispatcher, s_submit, frozen);
        if (rv == NULL) {
            done = -1;
        }
        else {
            Py_DECREF(rv);
        }
    }
    Py_DECREF(frozen);
    if (done < 0) {
        /* as QueueHandler.handle: a logging call never raises (the record is counted) */
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return NULL;
        }
        PyErr_Clear();
        PyObject *rv = PyObject_CallMethodOneArg(self->handler, s_handle_error, record);
        if (rv == NULL) {
            return NULL;
        }
        Py_DECREF(rv);
    }
    return Py_NewRef(record);
}

/* Takes what shim_call reads per record (see Shim); a TypeError names what is not as a
 * Dispatcher, its handler and the switch have it */
static int
shim_hold_state(Shim *self)
{
    self->handler_dict = PyObject_GenericGetDict(self->handler, NULL);
    self->dispatcher_dict = PyObject_GenericGetDict(self->dispatcher, NULL);
    self->switch_dict = PyObject_GenericGetDict(self->switch_, NULL);
    if (self->handler_dict == NULL || self->dispatcher_dict == NULL
        || self->switch_dict == NULL) {
        return -1;
    }
    if (!PyDict_Check(self->handler_dict) || !PyDict_Check(self->dispatcher_dict)
        || !PyDict_Check(self->switch_dict)) {
        PyErr_SetString(PyExc_TypeError, "Shim(): an instance __dict__ is not a dict");
        return -1;
    }
    PyObject *items = PyDict_GetItemWithError(self->dispatcher_dict, s_items);
    PyObject *limit = PyDict_GetItemWithError(self->dispatcher_dict, s_bound);
    if (items == NULL || limit == NULL || !PyLong_CheckExact(limit)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError,
                            "Shim(): the dispatcher has no _items queue or int _bound");
        }
        return -1;
    }
    self->items = Py_NewRef(items);
    self->limit = PyLong_AsSsize_t(limit);
    if (self->limit < 0) {
        if (PyErr_Occurred()) {
            return -1;
        }
        self->limit = 0; /* every record through submit(), which knows what it means */
    }
    self->append = PyObject_GetAttr(items, s_append);
    if (self->append == NULL) {
        return -1;
    }
    entries_init(&self->handler_e, self->handler_dict, 1, s_filters, NULL, NULL);
    entries_init(&self->trace_e, self->trace_globals, 3, s_hook, s_gate, s_gated);
    entries_init(&self->switch_e, self->switch_dict, 1, s_on, NULL, NULL);
    entries_init(&self->dispatcher_e, self->dispatcher_dict, 3, s_accepting, s_items,
                 s_pending);
    return 0;
}

static PyObject *
shim_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *handler, *dispatcher, *slow, *trace_globals, *switch_, *bound, *record_type;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "Shim() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "Shim", 7, 7, &handler, &dispatcher, &slow, &trace_globals,
                           &switch_, &bound, &record_type)) {
        return NULL;
    }
    if (!PyDict_CheckExact(trace_globals) || !PyContextVar_CheckExact(bound)
        || !PyType_Check(record_type) || !PyCallable_Check(slow)) {
        PyErr_SetString(PyExc_TypeError,
                        "Shim(): expected (handler, dispatcher, slow callable, module dict, "
                        "switch, ContextVar, LogRecord type)");
        return NULL;
    }
    if (fields == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups.configure() was not called");
        return NULL;
    }
    Shim *self = (Shim *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->handler = Py_NewRef(handler);
    self->dispatcher = Py_NewRef(dispatcher);
    self->slow = Py_NewRef(slow);
    self->trace_globals = Py_NewRef(trace_globals);
    self->switch_ = Py_NewRef(switch_);
    self->bound = Py_NewRef(bound);
    self->record_type = Py_NewRef(record_type);
    self->vectorcall = shim_call;
    if (shim_hold_state(self) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *
shim_repr(Shim *self)
{
    return PyUnicode_FromFormat("<compiled QueueHandler.handle of %R>", self->handler);
}

static PyTypeObject ShimType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aiologsinks._speedups.Shim",
    .tp_basicsize = sizeof(Shim),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "QueueHandler.handle's hot path (see _speedups.c).",
    .tp_new = shim_new,
    .tp_dealloc = (destructor)shim_dealloc,
    .tp_traverse = (traverseproc)shim_traverse,
    .tp_clear = (inquiry)shim_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Shim, vectorcall),
    .tp_repr = (reprfunc)shim_repr,
};

/* ---- FdWriter ------------------------------------------------------------------------
 *
 * A file sink's worker thread, for its writes: the loop submits a chunk (copied), a
 * POSIX thread of this writer writes the chunks in order to its own duplicate of the
 * file's descriptor, and tells the loop through a pipe the loop watches (add_reader);
 * collect() then returns (errno, position) per finished chunk, in order. A Python
 * worker thread has to take the GIL to wake up, to run its call and to hand back its
 * result, and each time it does, a loop thread busy serving requests waits for the GIL
 * in turn; this thread never touches a Python object, so the loop never waits for it.
 *
 * The state is shared by the Python object and the thread and freed by whichever lets
 * go of it last. close() asks the thread to write what is queued, close the descriptor
 * and end; nothing is notified after close(). In a forked child the thread does not
 * exist and the lock may be held by the parent's: a child only closes its copies of
 * the descriptors and leaves the state alone.
 */
#ifndef _WIN32
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>
#include <time.h>

typedef struct Chunk {
    struct Chunk *next;
    Py_ssize_t len;
    int err;
    long long pos;
    char data[];
} Chunk;

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_cond_t exited; /* broadcast when the thread ends (close_wait waits on it) */
    int refs;          /* the Python object and the thread, while each holds it */
    int fd;            /* our duplicate of the file's descriptor */
    int notify_r, notify_w;
    Chunk *todo, *todo_tail, *done, *done_tail;
    int notified;      /* a byte is in the pipe that collect() has not drained */
    int closing;
    int running;       /* the thread exists */
    pid_t owner;
} WriterState;

static void
state_free_locked_last(WriterState *st)
{
    /* the last holder, lock released: nobody else can see the state */
    Chunk *c = st->todo;
    while (c != NULL) {
        Chunk *next = c->next;
        PyMem_RawFree(c);
        c = next;
    }
    c = st->done;
    while (c != NULL) {
        Chunk *next = c->next;
        PyMem_RawFree(c);
        c = next;
    }
    if (st->fd >= 0) {
        close(st->fd);
    }
    if (st->notify_w >= 0) {
        close(st->notify_w);
    }
    if (st->notify_r >= 0) {
        close(st->notify_r);
    }
    pthread_cond_destroy(&st->exited);
    pthread_cond_destroy(&st->cond);
    pthread_mutex_destroy(&st->lock);
    PyMem_RawFree(st);
}

static void
state_release(WriterState *st)
{
    pthread_mutex_lock(&st->lock);
    int last = --st->refs == 0;
    pthread_mutex_unlock(&st->lock);
    if (last) {
        state_free_locked_last(st);
    }
}

static void *
writer_main(void *arg)
{
    WriterState *st = (WriterState *)arg;
    pthread_mutex_lock(&st->lock);
    for (;;) {
        while (st->todo == NULL && !st->closing) {
            pthread_cond_wait(&st->cond, &st->lock);
        }
        Chunk *c = st->todo;
        if (c == NULL) {
            break; /* closing, and everything queued is written */
        }
        pthread_mutex_unlock(&st->lock);
        const char *p = c->data;
        Py_ssize_t left = c->len;
        int err = 0;
        while (left > 0) {
            ssize_t n = write(st->fd, p, (size_t)left);
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                err = errno;
                break;
            }
            p += n;
            left -= n;
        }
        long long pos = err ? -1 : (long long)lseek(st->fd, 0, SEEK_CUR);
        pthread_mutex_lock(&st->lock);
        c->err = err;
        c->pos = pos;
        st->todo = c->next;
        if (st->todo == NULL) {
            st->todo_tail = NULL;
        }
        c->next = NULL;
        if (st->done_tail != NULL) {
            st->done_tail->next = c;
        }
        else {
            st->done = c;
        }
        st->done_tail = c;
        if (!st->notified && !st->closing) {
            st->notified = 1;
            char byte = 1;
            ssize_t ignored = write(st->notify_w, &byte, 1);
            (void)ignored; /* non-blocking; a full pipe already wakes the loop */
        }
    }
    close(st->fd);
    st->fd = -1;
    st->running = 0;
    pthread_cond_broadcast(&st->exited);
    int last = --st->refs == 0;
    pthread_mutex_unlock(&st->lock);
    if (last) {
        state_free_locked_last(st);
    }
    return NULL;
}

typedef struct {
    PyObject_HEAD
    WriterState *st; /* NULL once closed */
} FdWriter;

static int
cloexec_nonblock(int fd, int nonblock)
{
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
        return -1;
    }
    if (nonblock) {
        flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
            return -1;
        }
    }
    return 0;
}

static PyObject *
fdwriter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    int fd;
    if (!PyArg_ParseTuple(args, "i:FdWriter", &fd)) {
        return NULL;
    }
    WriterState *st = PyMem_RawCalloc(1, sizeof(WriterState));
    if (st == NULL) {
        return PyErr_NoMemory();
    }
    st->fd = st->notify_r = st->notify_w = -1;
    st->refs = 1;
    st->owner = getpid();
    int pipefd[2];
    if (pthread_mutex_init(&st->lock, NULL) != 0) {
        PyMem_RawFree(st);
        return PyErr_NoMemory();
    }
    if (pthread_cond_init(&st->cond, NULL) != 0) {
        pthread_mutex_destroy(&st->lock);
        PyMem_RawFree(st);
        return PyErr_NoMemory();
    }
    if (pthread_cond_init(&st->exited, NULL) != 0) {
        pthread_cond_destroy(&st->cond);
        pthread_mutex_destroy(&st->lock);
        PyMem_RawFree(st);
        return PyErr_NoMemory();
    }
    st->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (st->fd < 0 || pipe(pipefd) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        state_free_locked_last(st);
        return NULL;
    }
    st->notify_r = pipefd[0];
    st->notify_w = pipefd[1];
    if (cloexec_nonblock(st->notify_r, 1) < 0 || cloexec_nonblock(st->notify_w, 1) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        state_free_locked_last(st);
        return NULL;
    }
    FdWriter *self = (FdWriter *)type->tp_alloc(type, 0);
    if (self == NULL) {
        state_free_locked_last(st);
        return NULL;
    }
    self->st = st;
    return (PyObject *)self;
}

static WriterState *
open_state(FdWriter *self)
{
    if (self->st == NULL) {
        PyErr_SetString(PyExc_ValueError, "write to a closed FdWriter");
        return NULL;
    }
    if (self->st->owner != getpid()) {
        PyErr_SetString(PyExc_RuntimeError, "FdWriter made by another process (forked)");
        return NULL;
    }
    return self->st;
}

static PyObject *
fdwriter_submit(FdWriter *self, PyObject *arg)
{
    WriterState *st = open_state(self);
    if (st == NULL) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    Chunk *c = PyMem_RawMalloc(sizeof(Chunk) + (size_t)view.len);
    if (c == NULL) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    memcpy(c->data, view.buf, (size_t)view.len);
    c->len = view.len;
    c->next = NULL;
    c->err = 0;
    c->pos = -1;
    PyBuffer_Release(&view);
    int failed = 0;
    pthread_mutex_lock(&st->lock);
    if (!st->running) {
        pthread_t tid;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        st->refs++;
        failed = pthread_create(&tid, &attr, writer_main, st);
        pthread_attr_destroy(&attr);
        if (failed) {
            st->refs--;
        }
        else {
            st->running = 1;
        }
    }
    if (!failed) {
        if (st->todo_tail != NULL) {
            st->todo_tail->next = c;
        }
        else {
            st->todo = c;
        }
        st->todo_tail = c;
        pthread_cond_signal(&st->cond);
    }
    pthread_mutex_unlock(&st->lock);
    if (failed) {
        PyMem_RawFree(c);
        errno = failed;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *
fdwriter_collect(FdWriter *self, PyObject *Py_UNUSED(ignored))
{
    WriterState *st = open_state(self);
    if (st == NULL) {
        return NULL;
    }
    /* drain the pipe before taking the list: a chunk finished after we take it writes
     * a new byte (notified is reset below), so no finished chunk goes unannounced */
    char sink[64];
    while (read(st->notify_r, sink, sizeof(sink)) > 0) {
    }
    pthread_mutex_lock(&st->lock);
    Chunk *c = st->done;
    st->done = st->done_tail = NULL;
    st->notified = 0;
    pthread_mutex_unlock(&st->lock);
    PyObject *out = PyList_New(0);
    while (c != NULL) {
        Chunk *next = c->next;
        if (out != NULL) {
            PyObject *item = Py_BuildValue("(iL)", c->err, c->pos);
            if (item == NULL || PyList_Append(out, item) < 0) {
                Py_CLEAR(out);
            }
            Py_XDECREF(item);
        }
        PyMem_RawFree(c);
        c = next;
    }
    return out;
}

static PyObject *
fdwriter_fileno(FdWriter *self, PyObject *Py_UNUSED(ignored))
{
    if (self->st == NULL) {
        PyErr_SetString(PyExc_ValueError, "fileno of a closed FdWriter");
        return NULL;
    }
    return PyLong_FromLong(self->st->notify_r);
}

static void
fdwriter_close_state(FdWriter *self)
{
    WriterState *st = self->st;
    if (st == NULL) {
        return;
    }
    self->st = NULL;
    if (st->owner != getpid()) {
        /* a forked child: close its copies, leave the parent's state (and lock) alone */
        if (st->fd >= 0) {
            close(st->fd);
        }
        close(st->notify_r);
        close(st->notify_w);
        return;
    }
    pthread_mutex_lock(&st->lock);
    st->closing = 1;
    pthread_cond_signal(&st->cond);
    pthread_mutex_unlock(&st->lock);
    state_release(st);
}

static PyObject *
fdwriter_close(FdWriter *self, PyObject *Py_UNUSED(ignored))
{
    fdwriter_close_state(self);
    Py_RETURN_NONE;
}

/* close(), then wait (without the GIL) until the thread has written what is queued and
 * closed its descriptor, or for ``timeout`` seconds: True when it had. For a caller
 * off the loop: a closed sink should hold no descriptor of its file. */
static PyObject *
fdwriter_close_wait(FdWriter *self, PyObject *arg)
{
    double timeout = PyFloat_AsDouble(arg);
    if (timeout == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    WriterState *st = self->st;
    if (st == NULL || st->owner != getpid()) {
        fdwriter_close_state(self);
        Py_RETURN_TRUE;
    }
    pthread_mutex_lock(&st->lock);
    st->refs++; /* ours while we wait: the thread may free it as it ends */
    pthread_mutex_unlock(&st->lock);
    fdwriter_close_state(self);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    double whole = timeout > 0 ? (double)(long long)timeout : 0.0;
    deadline.tv_sec += (time_t)whole;
    deadline.tv_nsec += (long)((timeout > 0 ? timeout - whole : 0.0) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec += 1;
        deadline.tv_nsec -= 1000000000L;
    }
    int ended;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&st->lock);
    while (st->running) {
        if (pthread_cond_timedwait(&st->exited, &st->lock, &deadline) == ETIMEDOUT) {
            break;
        }
    }
    ended = !st->running;
    pthread_mutex_unlock(&st->lock);
    Py_END_ALLOW_THREADS
    state_release(st);
    return PyBool_FromLong(ended);
}

static void
fdwriter_dealloc(FdWriter *self)
{
    fdwriter_close_state(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef fdwriter_methods[] = {
    {"submit", (PyCFunction)fdwriter_submit, METH_O,
     "Queue a copy of the bytes-like argument, to be written after those before it."},
    {"collect", (PyCFunction)fdwriter_collect, METH_NOARGS,
     "(errno or 0, file position after the write or -1) of each chunk written since "
     "the last call, in order."},
    {"fileno", (PyCFunction)fdwriter_fileno, METH_NOARGS,
     "The descriptor that is readable when chunks were written (for add_reader)."},
    {"close", (PyCFunction)fdwriter_close, METH_NOARGS,
     "Write what is queued, then close the duplicate descriptor; nothing is notified."},
    {"close_wait", (PyCFunction)fdwriter_close_wait, METH_O,
     "close(), then wait up to the timeout (s, without the GIL) for the thread to end "
     "with its descriptor closed; True when it did."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FdWriterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aiologsinks._speedups.FdWriter",
    .tp_basicsize = sizeof(FdWriter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A file's writes on a thread that never takes the GIL (see _speedups.c).",
    .tp_new = fdwriter_new,
    .tp_dealloc = (destructor)fdwriter_dealloc,
    .tp_methods = fdwriter_methods,
};
#endif /* _WIN32 */

static PyObject *
float_repr(PyObject *Py_UNUSED(module), PyObject *arg)
{
    double d = PyFloat_AsDouble(arg);
    if (d == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (!short_float_repr || !isfinite(d)) {
        PyObject *f = PyFloat_FromDouble(d);
        if (f == NULL) {
            return NULL;
        }
        PyObject *text = PyFloat_Type.tp_repr(f);
        Py_DECREF(f);
        return text;
    }
    char digits[32];
    Py_ssize_t n = shortest_repr(d, digits);
    return PyUnicode_FromStringAndSize(digits, n);
}

static PyMethodDef methods[] = {
    {"freeze_plain", freeze_plain, METH_O,
     "The frozen tuple of a plain record's __dict__, or None when it is not plain."},
    {"configure", configure, METH_O, "Set the standard attribute names, in order."},
    {"format_run", (PyCFunction)(void (*)(void))format_run, METH_FASTCALL,
     "Format a run of common frozen records (see _fastformat.FrozenFormat.lines)."},
    {"json_run", (PyCFunction)(void (*)(void))json_run, METH_FASTCALL,
     "JSON-encode a run of common frozen records (see sinks/http.py)."},
    {"otlp_run", (PyCFunction)(void (*)(void))otlp_run, METH_FASTCALL,
     "OTLP-protobuf-encode a run of common frozen records (see sinks/otlp.py)."},
    {"percent_format", (PyCFunction)(void (*)(void))percent_format, METH_FASTCALL,
     "fmt % values where the compiled line formatting takes it, else None (tests)."},
    {"otlp_group", (PyCFunction)(void (*)(void))otlp_group, METH_FASTCALL,
     "Group the front of a chunk by scope within a byte limit (see sinks/otlp.py)."},
    {"otlp_frames", otlp_frames, METH_O,
     "Frame log record messages as ScopeLogs.log_records fields (see _otlp_map.py)."},
    {"syslog_run", (PyCFunction)(void (*)(void))syslog_run, METH_FASTCALL,
     "Frame a run of formatted syslog messages (see sinks/syslog.py)."},
    {"float_repr", float_repr, METH_O,
     "repr(float(x)), as json_run writes floats (tests compare the two)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "aiologsinks._speedups",
    "The optional compiled accelerator of aiologsinks (see _record.freeze).", -1, methods,
};

static int
intern_names(void)
{
    struct {
        PyObject **at;
        const char *text;
    } names[] = {
        {&s_filters, "filters"},   {&s_hook, "hook"},
        {&s_gate, "gate"},         {&s_gated, "gated"},
        {&s_on, "on"},             {&s_accepting, "_accepting"},
        {&s_items, "_items"},      {&s_bound, "_bound"},
        {&s_pending, "_wake_pending"}, {&s_append, "append"},
        {&s_submit, "submit"},     {&s_wake_up, "_wake_up"},
        {&s_handle_error, "_rejected"}, /* counts the record, then handleError */
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        *names[i].at = PyUnicode_InternFromString(names[i].text);
        if (*names[i].at == NULL) {
            return -1;
        }
    }
    return 0;
}

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (intern_names() < 0 || PyType_Ready(&ShimType) < 0) {
        return NULL;
    }
    PyObject *style = PySys_GetObject("float_repr_style"); /* borrowed */
    short_float_repr = style != NULL && PyUnicode_Check(style)
                       && PyUnicode_CompareWithASCIIString(style, "short") == 0;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyType_Ready(&FieldsType) < 0
        || PyModule_AddObjectRef(m, "Fields", (PyObject *)&FieldsType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Shim", (PyObject *)&ShimType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
#ifndef _WIN32
    if (PyType_Ready(&FdWriterType) < 0
        || PyModule_AddObjectRef(m, "FdWriter", (PyObject *)&FdWriterType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
#endif
    return m;
}
