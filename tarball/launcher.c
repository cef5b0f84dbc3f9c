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
 * `with-contenv` alone is native, not Python: it is every cont-init script's and many run
 * scripts' shebang, and an interpreter start per script is ~10 ms of CPU. It does exactly what
 * overlayd.contenv.with_contenv_main does (tests/test_dist.py runs both on the same store).
 *
 * The tables (RUNTIME, PYTHON, ENTRIES, FILES) come from launcher_table.h, written at build time.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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

extern char **environ;

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

/* overlayd.contenv's rules for a name in container_environment/. */
static int valid_name(const char *name)
{
    return name[0] && name[0] != '.' && !strchr(name, '=') && !strchr(name, '/');
}

/* One variable's value: the file's bytes, one trailing newline dropped; NULL to skip it
 * (unreadable, not a regular file, or holding a NUL byte). */
static char *read_value(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return NULL;
    }
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *buf = malloc(cap + 1);
    for (ssize_t got = 1; buf && got > 0; len += (size_t)got) {
        if (len == cap) {
            char *bigger = realloc(buf, 2 * cap + 1);
            if (!bigger) {
                len = (size_t)-1;
                break;
            }
            buf = bigger, cap *= 2;
        }
        got = read(fd, buf + len, cap - len);
        if (got < 0)
            len = (size_t)-1, got = 0; /* a read error: skip the variable */
    }
    close(fd);
    if (!buf || len == (size_t)-1 || memchr(buf, '\0', len)) {
        free(buf);
        return NULL;
    }
    if (len && buf[len - 1] == '\n')
        len--;
    buf[len] = '\0';
    return buf;
}

/* `with-contenv PROGRAM [ARG...]`: exec PROGRAM with the saved container environment (or the
 * current one with S6_KEEP_ENV set, or when nothing is saved). */
static int with_contenv(int argc, char **argv)
{
    if (argc < 2) {
        fputs("usage: with-contenv PROGRAM [ARG...]\n", stderr);
        return 100;
    }
    const char *keep = getenv("S6_KEEP_ENV");
    if (!keep || !*keep || strcmp(keep, "0") == 0) {
        const char *run_dir = getenv("OVERLAY_RUN_DIR");
        char path[4096];
        snprintf(path, sizeof path, "%s/container_environment",
                 run_dir && *run_dir ? run_dir : "/run/overlay");
        DIR *dir = opendir(path);
        size_t n = 0, cap = 64;
        char **env = malloc(cap * sizeof *env);
        for (struct dirent *e; dir && env && (e = readdir(dir));) {
            char *value = valid_name(e->d_name) ? read_value(dirfd(dir), e->d_name) : NULL;
            if (!value)
                continue;
            char *var = malloc(strlen(e->d_name) + strlen(value) + 2);
            if (n + 1 == cap)
                env = realloc(env, (cap *= 2) * sizeof *env);
            if (!var || !env)
                fail("with-contenv", "out of memory");
            sprintf(var, "%s=%s", e->d_name, value);
            env[n++] = var;
            free(value);
        }
        if (dir)
            closedir(dir);
        if (env && n) {
            env[n] = NULL;
            environ = env; /* execvp searches the PATH of the new environment, as Python does */
        }
    }
    execvp(argv[1], argv + 1);
    int err = errno;
    fprintf(stderr, "with-contenv: cannot run '%s': %s\n", argv[1], strerror(err));
    return err == ENOENT ? 127 : 126;
}

int main(int argc, char **argv, char **envp)
{
    const char *name = argc > 0 ? base_name(argv[0]) : "init";
    if (strcmp(name, "with-contenv") == 0)
        return with_contenv(argc, argv);
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
