"""Run by the archive's own interpreter at build time: which modules the archive needs.

`findmods.py STDLIB SITE MODULE...` prints, one JSON object per line, every module reachable
from the given modules (imports inside functions included: modulefinder reads all the
bytecode), found in STDLIB or SITE, with its file. A package in SITE counts with all its
submodules; a stdlib package only with what is imported from it.
"""

import json
import modulefinder
import pkgutil
import sys


def main() -> None:
    stdlib, site, *packages = sys.argv[1:]
    finder = modulefinder.ModuleFinder(path=[site, stdlib, f"{stdlib}/lib-dynload"])
    for package in packages:
        finder.import_hook(package)
        top = finder.modules[package]
        if not top.__path__ or not top.__path__[0].startswith(site):
            continue
        for info in pkgutil.walk_packages(top.__path__, prefix=f"{package}."):
            finder.import_hook(info.name)
    for name, module in sorted(finder.modules.items()):
        if module.__file__:
            print(json.dumps({"name": name, "file": module.__file__,
                              "package": bool(module.__path__)}))


if __name__ == "__main__":
    main()
