"""`python -m tarball [--out DIR] [--cache DIR] [--work DIR]` (what `make dist` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .build import REPO, build


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tarball", description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "dist")
    parser.add_argument("--cache", type=Path, default=REPO / "build/dist-cache",
                        help="downloaded .deb and .whl files, kept between builds")
    parser.add_argument("--work", type=Path, default=REPO / "build/dist-work")
    args = parser.parse_args()
    build(args.out, args.cache, args.work)


if __name__ == "__main__":
    main()
