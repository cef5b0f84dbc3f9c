/* The archive's /init and every Python command in /command (overlayctl, with-contenv, ...).
 *
 * One static binary; which command it is comes from the name it was run as (argv[0]'s last
 * component: /init, /command/overlayctl, /usr/bin/with-contenv, a shebang's path, ...).
 * It checks that the runtime it needs is all there (one line naming the first missing or
 * truncated file, exit 1: a partial extraction never reaches a Python traceback or a hang),
 * then execs the archive's own interpreter, isolated (-I: the image's PYTHONHOME, PYTHONPATH,
 * PYTHONSTARTUP... are ignored) and without `site` (-S):
 *
 *   python3.11 -I -S -X utf8 -c "import _overlayd_boot as b; b.run('MODULE', 'FUNCTION')" ARGV0 ARGS...
 *
 * (_overlayd_boot makes sys.argv [ARGV0, ARGS...], as for any console script.)
 *
 * The environment reaches the program unchanged, except what would change how the archive's
 * own loader and interpreter start: every LD_* variable (LD_PRELOAD, LD_LIBRARY_PATH, ...) is
 * handed over as _OVERLAYD_KEEP_LD_...=value, and _overlayd_boot puts it back under its own
 * name before any of overlayd's code runs, so children get it as the image set it. The same
 * module undoes Python's locale coercion of LC_CTYPE (_OVERLAYD_KEEP_LC_CTYPE / _OVERLAYD_DROP).
 * For /init only, /command is appended to PATH when missing (s6-overlay puts it there too; the
 * image's own directories stay first).
 *
 * The tables (RUNTIME, PYTHON, ENTRIES, FILES) come from launcher_table.h, written at build time.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct entry {
    const char *name;     /* command name: basename of argv[0] */
    const char *module;   /* module holding the entry point */
    const char *function; /* the function: its return value is the exit code */
    int is_init;          /* 1: /init (PATH gains /command) */
};

struct runtime_file {
    const char *path; /* absolute, under RUNTIME */
    long long size;   /* bytes, -1: a directory */
};

#include "launcher_table.h"

#define KEEP_PREFIX "_OVERLAYD_KEEP_"

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static const struct entry *find_entry(const char *name)
{
    for (size_t i = 0; i < sizeof ENTRIES / sizeof ENTRIES[0]; i++)
        if (strcmp(ENTRIES[i].name, name) == 0)
            return &ENTRIES[i];
    return NULL;
}

/* The first runtime file that is missing or has the wrong size, or NULL when all are there. */
static const char *broken_file(const char **why)
{
    struct stat st;
    for (size_t i = 0; i < sizeof FILES / sizeof FILES[0]; i++) {
        const struct runtime_file *f = &FILES[i];
        if (stat(f->path, &st) != 0) {
            *why = errno == ENOENT || errno == ENOTDIR ? "missing" : strerror(errno);
            return f->path;
        }
        if (f->size < 0 ? !S_ISDIR(st.st_mode) : (!S_ISREG(st.st_mode) || st.st_size != f->size)) {
            *why = "truncated or replaced";
            return f->path;
        }
    }
    return NULL;
}

static void fail(const char *name, const char *what)
{
    fprintf(stderr, "%s: overlayd runtime %s broken: %s\n", name, RUNTIME, what);
    exit(1);
}

static char *joined(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *out = malloc(la + lb + 1);
    if (!out)
        fail("overlayd", "out of memory");
    memcpy(out, a, la);
    memcpy(out + la, b, lb + 1);
    return out;
}

static int path_has_command(const char *path)
{
    const char *p = path;
    while (p) {
        if (strncmp(p, "/command", 8) == 0 && (p[8] == ':' || p[8] == '\0'))
            return 1;
        p = strchr(p, ':');
        if (p)
            p++;
    }
    return 0;
}

/* The environment the interpreter starts with (see the header comment). */
static char **python_environment(char **envp, int is_init)
{
    size_t n = 0;
    while (envp[n])
        n++;
    char **out = calloc(n + 3, sizeof *out);
    if (!out)
        fail("overlayd", "out of memory");
    size_t k = 0;
    int has_lc_ctype = 0;
    for (size_t i = 0; i < n; i++) {
        char *var = envp[i];
        if (strncmp(var, "LD_", 3) == 0) {
            out[k++] = joined(KEEP_PREFIX, var);
            continue;
        }
        if (strncmp(var, "LC_CTYPE=", 9) == 0) {
            has_lc_ctype = 1;
            out[k++] = joined(KEEP_PREFIX, var);
        }
        if (is_init && strncmp(var, "PATH=", 5) == 0 && !path_has_command(var + 5))
            var = joined(var, var[5] ? ":/command" : "/command");
        out[k++] = var;
    }
    if (!has_lc_ctype)
        out[k++] = "_OVERLAYD_DROP=LC_CTYPE";
    out[k] = NULL;
    return out;
}

int main(int argc, char **argv, char **envp)
{
    const char *name = argc > 0 ? base_name(argv[0]) : "init";
    const struct entry *entry = find_entry(name);
    if (!entry) {
        fprintf(stderr, "%s: not a command of overlayd (this launcher serves /init and /command)\n",
                name);
        return 100;
    }
    const char *why = NULL;
    const char *bad = broken_file(&why);
    if (bad) {
        char line[4096];
        snprintf(line, sizeof line, "%s %s (extract the whole archive again)", bad, why);
        fail(name, line);
    }

    static char code[512];
    snprintf(code, sizeof code, "import _overlayd_boot as b;b.run('%s','%s')", entry->module,
             entry->function);
    char **args = calloc((size_t)argc + 10, sizeof *args);
    if (!args)
        fail(name, "out of memory");
    size_t k = 0;
    args[k++] = (char *)PYTHON;
    args[k++] = "-I";
    args[k++] = "-S";
    args[k++] = "-X";
    args[k++] = "utf8";
    args[k++] = "-c";
    args[k++] = code;
    args[k++] = argc > 0 ? argv[0] : "/init";
    for (int i = 1; i < argc; i++)
        args[k++] = argv[i];
    args[k] = NULL;

    execve(PYTHON, args, python_environment(envp, entry->is_init));
    char line[4096];
    snprintf(line, sizeof line, "cannot run %s: %s", PYTHON, strerror(errno));
    fail(name, line);
    return 1;
}
