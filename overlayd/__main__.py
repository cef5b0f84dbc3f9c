"""`overlayd [CMD [ARG...]]` — also installed as the image's /init.

Every argument is the CMD, exactly as Docker passes it to `ENTRYPOINT ["/init"]`; configuration
comes only from the environment.
"""

from __future__ import annotations

import os
import sys

from . import origenv, spawn

# Before anything installs a handler: the mask and ignored signals children must get back.
spawn.capture_original_signals()
# Before anything reads the environment: take back the LC_CTYPE Python's locale coercion added.
origenv.undo_locale_coercion()


def main() -> None:
    from . import log
    from .config import EXIT_CONFIG_ERROR, ConfigError, load

    try:
        config = load(os.environ)
    except ConfigError as exc:
        log.fatal(str(exc))
        sys.exit(EXIT_CONFIG_ERROR)
    log.set_verbosity(config.verbosity)
    from .stages import Container

    try:
        container = Container(config, sys.argv[1:])
        code = container.run()
    except OSError as exc:
        log.fatal(f"cannot boot: {exc.strerror}: {exc.filename or ''}".rstrip(": "))
        sys.exit(EXIT_CONFIG_ERROR)
    _exit_now(code)


def _exit_now(code: int) -> None:
    """Exit without the interpreter's teardown (freeing every module and object one by one:
    ~3-5 ms of PID 1's CPU at each container stop, for memory the kernel frees anyway); what
    that teardown would still have done is done here: log lines drained, std streams flushed."""
    from . import log

    log.drain_at_exit()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
