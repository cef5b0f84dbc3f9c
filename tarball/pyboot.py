"""`_overlayd_boot`: the first module the archive's interpreter runs (see launcher.c).

Shipped in the archive only (as `_overlayd_boot.pyc` in the runtime's stdlib directory).
It puts back what the launcher kept away from the interpreter (LD_* variables) and what Python
changed at start-up (the LC_CTYPE its locale coercion sets), so `os.environ` — and with it the
container environment every child gets — is the one the container was started with. Then it
runs the entry point; a module that cannot be imported (a partial extraction) is one line on
stderr and exit 1, never a traceback.
"""

import os
import sys

KEEP = "_OVERLAYD_KEEP_"


def restore_environment(environ: "os._Environ[str]") -> None:
    for key in [key for key in environ if key.startswith(KEEP)]:
        environ[key[len(KEEP) :]] = environ.pop(key)
    dropped = environ.pop("_OVERLAYD_DROP", None)
    if dropped:
        environ.pop(dropped, None)


def run(module: str, function: str) -> None:
    restore_environment(os.environ)
    del sys.argv[0]  # "-c": the launcher passed its own argv[0] next
    name = os.path.basename(sys.argv[0]) if sys.argv else module
    try:
        entry = getattr(__import__(module, fromlist=[function]), function)
    except ImportError as exc:
        missing = exc.name or module
        sys.stderr.write(
            f"{name}: overlayd runtime broken: cannot import {missing} (extract the whole "
            "archive again)\n"
        )
        raise SystemExit(1) from None
    sys.exit(entry())
