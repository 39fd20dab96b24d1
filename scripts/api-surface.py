#!/usr/bin/env python3
"""Prints the public API of the library modules, one declaration a line, from the symbol graphs
that `swift package dump-symbol-graph` writes. `docs/api-surface.txt` is this output, committed;
`scripts/check-api.sh` fails when the code and the file disagree, so every change to the public
surface is a visible, reviewed change of that file."""
import glob
import json
import os
import sys

MODULES = ["ProxyProtocol", "NIOProxyProtocol", "NetProxy", "HummingbirdProxyProtocol"]


def declarations(directory):
    lines = set()
    for module in MODULES:
        # A module's own graph, and one per module whose types it extends (Module@Other).
        for path in glob.glob(os.path.join(directory, f"{module}.symbols.json")) + glob.glob(
            os.path.join(directory, f"{module}@*.symbols.json")
        ):
            graph = json.load(open(path))
            extended = os.path.basename(path)[len(module) :].split(".symbols.json")[0].lstrip("@")
            for symbol in graph["symbols"]:
                if symbol.get("accessLevel") not in ("public", "open"):
                    continue
                # Members a type gets from a protocol's default implementations (SwiftNIO's
                # handler methods, `!=`) belong to that protocol's module, not to this API.
                if f"/Sources/{module}/" not in symbol.get("location", {}).get("uri", ""):
                    continue
                name = ".".join(symbol["pathComponents"])
                declaration = "".join(f["spelling"] for f in symbol.get("declarationFragments", []))
                declaration = " ".join(declaration.split())
                where = f" (extends {extended})" if extended else ""
                lines.add(f"{module}{where}  {name}  {declaration}")
    return sorted(lines)


if __name__ == "__main__":
    directory = sys.argv[1] if len(sys.argv) > 1 else ".build/symbolgraph"
    if not glob.glob(os.path.join(directory, "*.symbols.json")):
        sys.exit(f"no symbol graphs in {directory}")
    print("\n".join(declarations(directory)))
