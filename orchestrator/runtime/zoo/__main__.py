"""``python -m orchestrator.runtime.zoo [build|list] [NAME|PROFILE ...] [--force] [--root DIR]``.

``build tiny`` builds every zoo checkpoint the ``tiny`` profile uses; ``build`` alone
builds them all; names build just those.
"""

from __future__ import annotations

import argparse
import sys
import time

from . import build_zoo, list_zoo, zoo_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.runtime.zoo", description=__doc__)
    parser.add_argument("command", choices=["build", "list"])
    parser.add_argument("names", nargs="*", help="zoo names (tiny-sd …) or a profile name (tiny)")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--root", default=None, help="zoo folder (default: $ORCHESTRATOR_ZOO_DIR or <data_dir>/zoo)")
    args = parser.parse_args(argv)
    registry = list_zoo()
    if args.command == "list":
        for name, entry in registry.items():
            print(f"{name:16} v{entry.version}  {entry.description}")
        print(f"\nfolder: {zoo_dir(args.root)}")
        return 0
    names: list[str] = []
    for item in args.names:
        if item in registry:
            names.append(item)
        else:
            from orchestrator.runtime.profiles import load_profile

            names.extend(load_profile(item).zoo_names())
    started = time.perf_counter()
    paths = build_zoo(names or None, root=args.root, force=args.force)
    for name, path in paths.items():
        print(f"{name:16} {path}")
    print(f"{len(paths)} checkpoint(s) ready in {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
