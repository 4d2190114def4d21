"""The data sets from the command line.

    python -m advlib.data list                  # the catalogue, and what is here already
    python -m advlib.data fetch mnist cifar10   # download through torchvision and verify the md5s

Files placed by hand (not torchvision's) are verified against the md5 table that
``$ADVLIB_CHECKSUMS`` names (see :func:`advlib.data.downloads.local_checksums`).

``--root PATH`` uses another cache folder than :func:`~advlib.data.cache_dir`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .downloads import CHECKSUMS_ENV, SOURCES
from .registry import SPECS, DatasetUnavailable, Spec, cache_dir, catalogue


def status(spec: Spec, root: Path) -> str:
    """'offline' (ships with a package), 'cached' (files in ``root``; 'cached, md5 from
    $ADVLIB_CHECKSUMS' when that table vouches for some of them) or 'needs download'."""
    if spec.offline:
        return "offline"
    source = SOURCES.get(spec.name)
    if source is None or source.missing(root):
        return "needs download"
    return f"cached, md5 from ${CHECKSUMS_ENV}" if source.hand_placed(root) else "cached"


def list_table(root: Path) -> str:
    """The catalogue as a text table."""
    rows = [("name", "title", "shape", "classes", "train", "test", "status")]
    for s in catalogue():
        shape = "x".join(map(str, s.shape))
        rows.append((s.name, s.title, shape, str(s.n_classes), f"{s.sizes[0]:,}", f"{s.sizes[1]:,}", status(s, root)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines + [f"\ncache folder: {root}"])


def fetch(names: list[str], root: Path) -> int:
    """Download and verify each data set; 0 when all are here, else 1 (with the reason on stderr)."""
    failed = 0
    for name in names:
        if name not in SPECS:
            print(f"unknown data set {name!r}; known: {', '.join(SPECS)}", file=sys.stderr)
            failed += 1
        elif SPECS[name].offline:
            print(f"{name}: ships with its package ({SPECS[name].source}); nothing to fetch")
        elif name not in SOURCES:
            print(f"{name}: registered without a download source; nothing to fetch", file=sys.stderr)
            failed += 1
        else:
            try:
                files = SOURCES[name].fetch(root)
            except DatasetUnavailable as e:
                print(f"error: {e}", file=sys.stderr)
                failed += 1
            else:
                print(f"{name}: {len(files)} files verified (md5) in {root / SOURCES[name].folder}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m advlib.data", description="The data sets of advlib.")
    parser.add_argument("--root", type=Path, default=None, help="cache folder (default: $ADVLIB_DATA or "
                        "datasets/cache of the checkout)")
    commands = parser.add_subparsers(dest="command", required=True)
    list_parser = commands.add_parser("list", help="the catalogue and what is cached")
    fetch_parser = commands.add_parser("fetch", help="download data sets into the cache and verify them")
    fetch_parser.add_argument("names", nargs="+", metavar="NAME")
    for sub in (list_parser, fetch_parser):  # --root also after the command
        sub.add_argument("--root", type=Path, default=argparse.SUPPRESS, help="cache folder")
    args = parser.parse_args(argv)
    root = args.root if args.root is not None else cache_dir()
    if args.command == "list":
        print(list_table(root))
        return 0
    return fetch(args.names, root)


if __name__ == "__main__":
    sys.exit(main())
