"""Run by the archive's own interpreter at build time: sources → sourceless .pyc.

Reads JSON lines `[source, destination, name_in_the_image, optimize]` on stdin (optimize 2:
no docstrings nor asserts, for all but overlayctl, whose docstrings are its --help).
Hash-based, unchecked .pyc (no source mtime inside, and nothing to check at import: there is
no source), the image's path as co_filename (tracebacks name it, and no build path leaks into
the archive). Run with PYTHONHASHSEED=0 so set and frozenset constants marshal in the same
order every build.
"""

import json
import py_compile
import sys


def main() -> None:
    for line in sys.stdin:
        source, destination, shown, optimize = json.loads(line)
        py_compile.compile(source, cfile=destination, dfile=shown, doraise=True, optimize=optimize,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)


if __name__ == "__main__":
    main()
