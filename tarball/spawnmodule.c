/* _overlayd_spawn: the C library's posix_spawn, for the archive's PID 1.
 *
 * overlayd/vspawn.py starts PID 1's children with posix_spawn; outside the archive it calls
 * the C library through _ctypes, which costs every boot ~1 ms (loading _ctypes and libffi,
 * declaring the C types) and ~0.25 MB of PID 1's memory. The archive ships this module
 * instead (tarball/cmodule.py builds it), and vspawn.py uses it there: the same calls, in the
 * same order, with the same arguments.
 *
 *   spawn(program, argv, envp, flags, mask, defaults, terminal, dups, cwd) -> pid
 *
 * program, argv[i], envp[i], cwd: bytes (cwd may be None); flags: posix_spawnattr_setflags's
 * (with POSIX_SPAWN_SETPGROUP the child leads a group of its own); mask and defaults: the raw
 * bits of a sigset_t (bytes of its exact size: sigaddset refuses the C library's own signals 32 and
 * 33, which must be in `defaults` for the child to get them at their default); terminal: the
 * fd whose foreground group the child takes (posix_spawn_file_actions_addtcsetpgrp_np), or
 * -1; dups: (target, source) pairs, each a dup2(source, target) in the child. OSError with
 * the C library's error number when a step or the exec fails.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>

/* A NULL-terminated array of the byte strings in `seq` (pointers into its bytes objects,
 * valid while `seq` lives); NULL with an exception set when an item is not bytes. */
static char **string_array(PyObject *seq, const char *what)
{
    PyObject *fast = PySequence_Fast(seq, what);
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    char **out = PyMem_Calloc((size_t)n + 1, sizeof *out);
    if (!out) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, i);
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "%s: bytes expected", what);
            PyMem_Free(out);
            Py_DECREF(fast);
            return NULL;
        }
        out[i] = PyBytes_AS_STRING(item);
    }
    Py_DECREF(fast); /* the items stay alive: `seq` holds them */
    return out;
}

static int set_dups(posix_spawn_file_actions_t *actions, PyObject *dups)
{
    PyObject *fast = PySequence_Fast(dups, "dups");
    if (!fast)
        return -1;
    int error = 0;
    for (Py_ssize_t i = 0; !error && i < PySequence_Fast_GET_SIZE(fast); i++) {
        int target, source;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, i), "ii", &target, &source)) {
            Py_DECREF(fast);
            return -1;
        }
        error = posix_spawn_file_actions_adddup2(actions, source, target);
    }
    Py_DECREF(fast);
    if (error) {
        errno = error;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static PyObject *overlayd_spawn(PyObject *module, PyObject *args)
{
    (void)module;
    const char *program;
    PyObject *argv_seq, *envp_seq, *dups, *cwd;
    int flags, terminal;
    Py_buffer mask, defaults;
    if (!PyArg_ParseTuple(args, "yOOiy*y*iOO", &program, &argv_seq, &envp_seq, &flags, &mask,
                          &defaults, &terminal, &dups, &cwd))
        return NULL;
    PyObject *result = NULL;
    char **argv = NULL, **envp = NULL;
    if (mask.len != sizeof(sigset_t) || defaults.len != sizeof(sigset_t)) {
        PyErr_Format(PyExc_ValueError, "signal sets must be %zu bytes", sizeof(sigset_t));
        goto done;
    }
    if (cwd != Py_None && !PyBytes_Check(cwd)) {
        PyErr_SetString(PyExc_TypeError, "cwd: bytes or None expected");
        goto done;
    }
    argv = string_array(argv_seq, "argv");
    envp = argv ? string_array(envp_seq, "envp") : NULL;
    if (!envp)
        goto done;

    posix_spawnattr_t attr;
    posix_spawn_file_actions_t actions;
    int error = posix_spawnattr_init(&attr);
    if (error) {
        errno = error;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    error = posix_spawn_file_actions_init(&actions);
    if (error) {
        posix_spawnattr_destroy(&attr);
        errno = error;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    if (flags & POSIX_SPAWN_SETPGROUP)
        error = posix_spawnattr_setpgroup(&attr, 0);
    if (!error)
        error = posix_spawnattr_setflags(&attr, (short)flags);
    if (!error)
        error = posix_spawnattr_setsigmask(&attr, (const sigset_t *)mask.buf);
    if (!error)
        error = posix_spawnattr_setsigdefault(&attr, (const sigset_t *)defaults.buf);
    if (!error && terminal >= 0)
        error = posix_spawn_file_actions_addtcsetpgrp_np(&actions, terminal);
    if (error) {
        errno = error;
        PyErr_SetFromErrno(PyExc_OSError);
    } else if (set_dups(&actions, dups) == 0) {
        if (cwd != Py_None)
            error = posix_spawn_file_actions_addchdir_np(&actions, PyBytes_AS_STRING(cwd));
        pid_t pid = 0;
        if (!error) {
            Py_BEGIN_ALLOW_THREADS
            error = posix_spawn(&pid, program, &actions, &attr, argv, envp);
            Py_END_ALLOW_THREADS
        }
        if (error) {
            errno = error;
            PyErr_SetFromErrno(PyExc_OSError);
        } else {
            result = PyLong_FromLong((long)pid);
        }
    }
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
done:
    PyMem_Free(argv);
    PyMem_Free(envp);
    PyBuffer_Release(&mask);
    PyBuffer_Release(&defaults);
    return result;
}

static PyMethodDef methods[] = {
    {"spawn", overlayd_spawn, METH_VARARGS,
     "spawn(program, argv, envp, flags, mask, defaults, terminal, dups, cwd) -> pid"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef definition = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_overlayd_spawn",
    .m_doc = "posix_spawn with raw signal sets, for overlayd's PID 1 (tarball/spawnmodule.c)",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__overlayd_spawn(void)
{
    return PyModule_Create(&definition);
}
