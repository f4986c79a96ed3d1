/* The optional compiled accelerator of aiologsinks: the shim's common case of freeze().
 *
 * _record.freeze() turns a plain LogRecord into a flat tuple of its attribute values
 * (see _record.py for the layout). Its common case - an exact LogRecord with the
 * standard attributes only, no exception, and a str message whose arguments are all
 * of immutable types (or none) - is done here, in one allocation, and the tuple is
 * untracked by the cyclic GC at once when it holds no tracked object: a queued record
 * then costs no collection anything, rather than one traversal before the GC untracks
 * it itself.
 *
 * freeze_plain(d) returns exactly the tuple the pure-Python path returns for a record
 * whose __dict__ is d, or None when the record is not the common case (the caller then
 * takes the pure-Python path, which handles every record). configure(fields) gives the
 * standard attribute names in LogRecord.__init__ order, as _record.FIELDS has them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *fields = NULL; /* tuple of str: LogRecord's attributes, in order */
static Py_ssize_t n_fields = 0;
static Py_ssize_t args_at = -1;
static Py_ssize_t msg_at = -1;
static Py_ssize_t exc_info_at = -1;

static int
immutable(PyObject *v)
{
    PyTypeObject *t = Py_TYPE(v);
    return t == &PyUnicode_Type || t == &PyLong_Type || t == &PyFloat_Type
        || t == &PyBool_Type || t == &PyBytes_Type || v == Py_None;
}

static PyObject *
freeze_plain(PyObject *module, PyObject *d)
{
    if (fields == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups.configure() was not called");
        return NULL;
    }
    if (!PyDict_CheckExact(d) || PyDict_GET_SIZE(d) != n_fields) {
        Py_RETURN_NONE; /* extra= attributes, or not a record's __dict__ */
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
    /* deferred arguments travel after the fields; without any, args stays */
    values[args_at] = n_args ? Py_None : args;
    PyObject *out = PyTuple_New(n_fields + n_args);
    if (out == NULL) {
        return NULL;
    }
    int tracked = 0;
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
    if (!tracked) {
        /* what the GC would do at its next collection, after traversing it */
        PyObject_GC_UnTrack(out);
    }
    return out;
}

static PyObject *
configure(PyObject *module, PyObject *names)
{
    if (!PyTuple_CheckExact(names)) {
        PyErr_SetString(PyExc_TypeError, "configure(): expected a tuple of field names");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    Py_ssize_t at = -1, m_at = -1, exc_at = -1;
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
    }
    if (at < 0 || m_at < 0 || exc_at < 0 || n > 64) {
        PyErr_SetString(PyExc_ValueError,
                        "configure(): at most 64 names, with msg, args and exc_info");
        return NULL;
    }
    Py_INCREF(names);
    Py_XSETREF(fields, names);
    n_fields = n;
    args_at = at;
    msg_at = m_at;
    exc_info_at = exc_at;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"freeze_plain", freeze_plain, METH_O,
     "The frozen tuple of a plain record's __dict__, or None when it is not plain."},
    {"configure", configure, METH_O, "Set the standard attribute names, in order."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "aiologsinks._speedups",
    "The optional compiled accelerator of aiologsinks (see _record.freeze).", -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
