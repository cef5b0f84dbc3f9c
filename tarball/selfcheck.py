"""Run by the archive's own interpreter at build time: can every module of ours and of the
wheels be imported from the runtime's lib/python3.11 alone?

`selfcheck.py LIBDIR PACKAGE...`: exit 1 naming the first module that cannot be imported.
The stdlib was cut to what modulefinder saw; this catches a cut that went too far.
"""

import importlib
import pkgutil
import sys


def main() -> None:
    libdir, *packages = sys.argv[1:]
    sys.path[:] = [libdir, f"{libdir}/lib-dynload"]
    for package in packages:
        names = [package]
        top = importlib.import_module(package)
        if hasattr(top, "__path__"):
            names += [i.name for i in pkgutil.walk_packages(top.__path__, prefix=f"{package}.")]
        for name in names:
            if name.endswith("__main__"):
                continue
            try:
                importlib.import_module(name)
            except Exception as exc:  # one line naming the module, whatever broke
                sys.exit(f"{name}: {exc}")


if __name__ == "__main__":
    main()
