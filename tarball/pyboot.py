"""`_overlayd_boot`: the first module the archive's interpreter runs (see launcher.c).

Shipped in the archive only (as `_overlayd_boot.pyc` in the runtime's stdlib directory).
It puts back what the launcher kept away from the interpreter (LD_* variables) and what Python
changed at start-up (the LC_CTYPE its locale coercion sets), so `os.environ` — and with it the
container environment every child gets — is the one the container was started with. Then it
runs the entry point; a module that cannot be imported (a partial or garbled extraction the
launcher's size check missed) is one line on stderr and exit 1, never a traceback.
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


def _failed_import(exc: BaseException) -> str | None:
    """The module or file whose loading raised `exc`, or None when `exc` is not about loading
    a module (a bug elsewhere must keep its traceback)."""
    if isinstance(exc, ImportError):
        return exc.name or str(exc)
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None or not tb.tb_frame.f_code.co_filename.startswith("<frozen importlib"):
        return None
    return str(tb.tb_frame.f_locals.get("bytecode_path") or tb.tb_frame.f_locals.get("name"))


def run(module: str, function: str) -> None:
    restore_environment(os.environ)
    del sys.argv[0]  # "-c": the launcher passed its own argv[0] next
    name = os.path.basename(sys.argv[0]) if sys.argv else module
    try:
        code = getattr(__import__(module, fromlist=[function]), function)()
    except (ImportError, EOFError, ValueError, TypeError) as exc:  # missing, cut or garbled
        what = _failed_import(exc)
        if what is None:
            raise
        sys.stderr.write(
            f"{name}: overlayd runtime broken: cannot load {what}: {exc} (extract the whole "
            "archive again)\n"
        )
        raise SystemExit(1) from None
    sys.exit(code)
