#!/usr/bin/env bash
# Compiles every ```swift block of README.md and of the DocC articles
# (Sources/*/Documentation.docc/*.md), as read from those files, so that no example drifts from
# the API. The blocks become executable targets of a throwaway package (.build/snippets/pkg) that
# depends on this checkout by path, and one `swift build` compiles them all; a block that does
# not compile fails the run, named by its file and line.
#
# What a block is:
# - Swift code: a program of its own (one executable target each, so that each may have
#   top-level code or @main), depending on the products its imports name: this package's
#   libraries, or a product this package itself uses from one of its dependencies.
# - A Package.swift excerpt (it names .package(...), .product(...), `dependencies:` or
#   `targets:`, and imports no module but PackageDescription): compiled as a manifest of its own, and every package and product it names must
#   exist: this package (its identity, "netproxy", as a path or URL dependency) with its
#   libraries, or one of this package's own dependencies (same URL, a version range that meets
#   this package's) with that package's products.
#
# A marker on the line just before a block's opening fence, an HTML comment that Markdown does
# not render, says what else a block is:
#   <!-- snippet: target NAME -->  the source of target NAME of a Package.swift excerpt in the
#                                  same file: built with exactly that target's dependencies
#                                  (and every import must be one of them)
#   <!-- snippet: continues -->    continues the program of the previous Swift block of the file
#                                  (appended to it), for an excerpt that uses its names
#   <!-- snippet: fragment -->     deliberately not a program: not compiled, and counted
# (Tests/CommandTests/ReadmeConfigurationTests.swift reads the same markers on ```json blocks.)
#
# The first run builds the dependencies (about 5 minutes on 2 cores); later runs reuse
# .build/snippets and take seconds. A build stops at its first failing target, so a program that
# fails is left out of another build, until every program has compiled or failed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scratch=$root/.build/snippets
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$scratch"

cat >"$work/snippets.py" <<'PYTHON'
import json
import os
import re
import sys
from pathlib import Path

FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})[ \t]*([^`\s]*)")
MARKER = re.compile(r"^\s*<!--\s*snippet:\s*(.*?)\s*-->\s*$")
EXCERPT = re.compile(
    r"^\s*(?:import\s+PackageDescription\b|let\s+package\s*=|\.package\(|\.product\(|(?:dependencies|targets|products)\s*:)",
    re.M)
IMPORT = re.compile(
    r"^[ \t]*(?:@\w+(?:\([^)]*\))?\s+)*import\s+(?:(?:typealias|struct|class|enum|protocol|let|var|func)\s+)?([A-Za-z_]\w*)")
# Modules that come with the toolchain, not from a package.
TOOLCHAIN = {
    "Swift", "Foundation", "FoundationEssentials", "FoundationInternationalization", "FoundationNetworking",
    "FoundationXML", "Dispatch", "Glibc", "Musl", "Darwin", "Synchronization", "Observation", "RegexBuilder",
    "Distributed", "_Concurrency", "_StringProcessing", "Testing", "XCTest",
}

work = Path(sys.argv[2])


def load(name, default=None):
    path = work / name
    return json.loads(path.read_text()) if path.exists() else default


def save(name, value):
    (work / name).write_text(json.dumps(value, indent=1))


def fail(message):
    with open(work / "errors.txt", "a") as errors:
        errors.write(message + "\n")


def blocks_of(path):
    """The fenced blocks of a Markdown file: language, first line of code, lines, marker."""
    lines = Path(path).read_text().split("\n")
    found, i = [], 0
    marker_lines = {n for n, line in enumerate(lines) if MARKER.match(line)}
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, language = match.groups()
        j = i + 1
        while j < len(lines):
            stripped = lines[j].strip()
            if stripped.startswith(fence) and stripped.strip(fence[0]) == "":
                break
            j += 1
        marker = None
        if i - 1 in marker_lines:
            marker = MARKER.match(lines[i - 1]).group(1)
            marker_lines.discard(i - 1)
        body = [line[len(indent):] if line.startswith(indent) else line.lstrip() for line in lines[i + 1:j]]
        found.append({"file": str(path), "fence": i + 1, "first": i + 2, "language": language, "marker": marker,
                      "lines": body})
        i = j + 1
    return found, sorted(n + 1 for n in marker_lines)


def wrap_excerpt(text):
    """A Package.swift around an excerpt: (text before it, text after it)."""
    header = "// swift-tools-version:6.1\nimport PackageDescription\n"
    if re.search(r"^\s*let\s+package\s*=", text, re.M):
        before = "" if text.lstrip().startswith("// swift-tools-version") else "// swift-tools-version:6.1\n"
        if "import PackageDescription" not in text:
            before += "import PackageDescription\n"
        return before, "\n"
    first = next((line.strip() for line in text.split("\n") if line.strip() and not line.strip().startswith("//")), "")
    if first.startswith(".package("):
        return header + 'let package = Package(name: "Excerpt", dependencies: [\n', "\n])\n"
    if first.startswith((".product(", ".target(name:", ".byName(")):
        # Lines for a target's dependencies alone: the packages they name are declared by the
        # wrapper (and not checked as the excerpt's own).
        packages = sorted(set(re.findall(r'package:\s*"([^"]+)"', text)))
        declared = ", ".join(f'.package(path: "../{name}")' for name in packages)
        return (header + f'let package = Package(name: "Excerpt", dependencies: [{declared}], targets: [.target(name: '
                '"Excerpt", dependencies: [\n'), "\n])])\n"
    if first.startswith((".target(", ".executableTarget(", ".testTarget(")):
        return header + 'let package = Package(name: "Excerpt", targets: [\n', "\n])\n"
    return header + 'let package = Package(\nname: "Excerpt",\n', "\n)\n"


def extract(files):
    """Reads the Swift blocks and their markers; writes each Package.swift excerpt as a package."""
    blocks = []
    for file in files:
        found, stray = blocks_of(file)
        for line in stray:
            fail(f"{file}:{line}: error: a snippet marker must be on the line just before a block's opening fence")
        previous = None
        for block in found:
            if block["language"] != "swift":
                continue
            where = f"{file}:{block['fence']}"
            words = (block["marker"] or "").split()
            directive, arguments = (words[0], words[1:]) if words else (None, [])
            text = "\n".join(block["lines"])
            block["index"] = len(blocks)
            if directive == "fragment" and not arguments:
                block["kind"] = "fragment"
                previous = None
            elif directive == "continues" and not arguments:
                if previous is None:
                    fail(f"{where}: error: 'continues', but the previous Swift block of the file is not a program")
                    continue
                block["kind"] = "continues"
                block["of"] = previous
            elif directive == "target" and len(arguments) == 1:
                block["kind"] = "target"
                block["target"] = arguments[0]
                previous = block["index"]
            elif directive is None and EXCERPT.search(text) and not any(
                    IMPORT.match(line) and IMPORT.match(line).group(1) != "PackageDescription" for line in block["lines"]):
                block["kind"] = "excerpt"
                before, after = wrap_excerpt(text)
                block["wrapped_packages"] = "dependencies: [.package(path:" in before
                block["offset"] = before.count("\n")
                directory = work / "excerpts" / str(block["index"])
                directory.mkdir(parents=True)
                (directory / "Package.swift").write_text(before + text + after)
                previous = None
            elif directive is None:
                block["kind"] = "program"
                previous = block["index"]
            else:
                fail(f"{where}: error: unknown snippet marker '{block['marker']}' (target NAME, continues, fragment)")
                continue
            blocks.append(block)
    save("blocks.json", blocks)
    for block in blocks:
        if block["kind"] == "excerpt":
            print(work / "excerpts" / str(block["index"]))


def excerpt_failed(index):
    """Names the lines of an excerpt whose manifest did not compile."""
    block = load("blocks.json")[int(index)]
    directory = work / "excerpts" / index
    log = (directory / "dump.log").read_text()
    reported = False
    for match in re.finditer(r"Package\.swift:(\d+):(\d+): error: (.*)", log):
        line = int(match.group(1)) - block["offset"] - 1 + block["first"]
        fail(f"{block['file']}:{line}: error: {match.group(3)} (in the Package.swift excerpt at line {block['fence']})")
        reported = True
    if not reported:
        fail(f"{block['file']}:{block['fence']}: error: the Package.swift excerpt does not load:\n{log.strip()}")


def repository():
    """This package: its identity, library products, dependencies, and the module each product it uses provides."""
    manifest = load("repo.json")
    identity = manifest["name"].lower()
    libraries = {p["name"] for p in manifest["products"] if "library" in p["type"]}
    dependencies = {}
    for dependency in manifest["dependencies"]:
        for kind, entries in dependency.items():
            dependencies[entries[0]["identity"]] = dict(entries[0], kind=kind)
    modules = {name: (name, identity) for name in libraries}
    for target in manifest["targets"]:
        for dependency in target.get("dependencies", []):
            if "product" in dependency:
                name, package = dependency["product"][0], dependency["product"][1]
                modules.setdefault(name, (name, package))
    return identity, libraries, dependencies, modules


def excerpt_targets():
    """By file and target name: the product dependencies of each target a loaded excerpt declares."""
    targets = {}
    for block in load("blocks.json"):
        if block["kind"] != "excerpt":
            continue
        manifest = load(f"excerpts/{block['index']}/dump.json")
        if manifest is None:
            continue
        for target in manifest["targets"]:
            targets[(block["file"], target["name"])] = (block, target)
    return targets


def requirement(entry):
    value = entry["requirement"]
    if "range" in value:
        return f'"{value["range"][0]["lowerBound"]}"..<"{value["range"][0]["upperBound"]}"'
    if "exact" in value:
        return f'exact: "{value["exact"][0]}"'
    if "branch" in value:
        return f'branch: "{value["branch"][0]}"'
    return f'revision: "{value["revision"][0]}"'


def line_of(block, pattern):
    """The file's line of the first line of the block that matches, else the block's fence."""
    for n, line in enumerate(block["lines"]):
        if re.search(pattern, line):
            return block["first"] + n
    return block["fence"]


def generate(scratch):
    """The throwaway package: one executable target per program, the source of its blocks."""
    scratch = Path(scratch)
    identity, libraries, dependencies, modules = repository()
    link = scratch / identity
    if not link.is_symlink() or os.readlink(link) != sys.argv[4]:
        if link.is_symlink():
            link.unlink()
        link.symlink_to(sys.argv[4])
    blocks = load("blocks.json")
    declared = excerpt_targets()
    programs = []
    for block in blocks:
        if block["kind"] in ("program", "target"):
            stem = re.sub(r"\W", "_", Path(block["file"]).stem)
            name = block.get("target") or f"Snippet_{stem}_{block['fence']}"
            programs.append({"name": name, "blocks": [block]})
            block["program"] = len(programs) - 1
        elif block["kind"] == "continues":
            block["program"] = blocks[block["of"]]["program"]
            programs[block["program"]]["blocks"].append(block)
    packages = set()
    for program in programs:
        first = program["blocks"][0]
        products = []
        if first["kind"] == "target":
            entry = declared.get((first["file"], first["target"]))
            if entry is None:
                fail(f"{first['file']}:{first['fence']}: error: no Package.swift excerpt of the file declares target {first['target']}")
                continue
            excerpt, target = entry
            for dependency in target.get("dependencies", []):
                if "product" not in dependency:
                    fail(f"{excerpt['file']}:{line_of(excerpt, re.escape(str(list(dependency.values())[0][0])))}: error: "
                         f"target {target['name']}: only .product(name:package:) dependencies can be checked")
                    continue
                product = (dependency["product"][0], dependency["product"][1])
                # A library this package does not have is the excerpt check's to report; left
                # in, it would stop the build of every program.
                if product[1] != identity or product[0] in libraries:
                    products.append(product)
        else:
            for block in program["blocks"]:
                for n, line in enumerate(block["lines"]):
                    match = IMPORT.match(line)
                    if not match or match.group(1) in TOOLCHAIN:
                        continue
                    if match.group(1) not in modules:
                        fail(f"{block['file']}:{block['first'] + n}: error: import {match.group(1)}: not a library of this "
                             "package nor a product it uses from one of its dependencies")
                        continue
                    products.append(modules[match.group(1)])
        program["products"] = sorted(set(products))
        for _, package in program["products"]:
            if package != identity and package not in dependencies:
                fail(f"{first['file']}:{first['fence']}: error: package {package} is neither this package nor one of its "
                     "dependencies, so the block cannot be built here")
            packages.add(package)
    package = scratch / "pkg"
    sources = package / "Sources"
    sources.mkdir(parents=True, exist_ok=True)
    manifest = ["// swift-tools-version:6.1", "// Written by scripts/check-snippets.sh: the Swift blocks of README.md and the DocC articles.",
                "import PackageDescription", "", "let package = Package(", '    name: "Snippets",', "    dependencies: [",
                f'        .package(path: "../{identity}"),']
    for name in sorted(packages - {identity}):
        if name in dependencies:
            entry = dependencies[name]
            if entry["kind"] == "sourceControl":
                url = entry["location"]["remote"][0]["urlString"]
                manifest.append(f'        .package(url: "{url}", {requirement(entry)}),')
            else:
                manifest.append(f'        .package(path: "{entry["path"]}"),')
    manifest += ["    ],", "    targets: ["]
    targets = {}
    excluded = set(load("excluded.json", []))
    for program in programs:
        if "products" not in program or program["name"] in excluded:
            continue
        products = ", ".join(f'.product(name: "{name}", package: "{package}")' for name, package in program["products"])
        manifest.append(f'        .executableTarget(name: "{program["name"]}", dependencies: [{products}]),')
        text, segments = [], []
        for block in program["blocks"]:
            segments.append({"file": block["file"], "fence": block["fence"], "first": block["first"],
                             "start": len(text) + 1, "count": len(block["lines"])})
            text += block["lines"]
        file = "Snippet.swift" if any(re.match(r"\s*@main\b", line) for line in text) else "main.swift"
        directory = sources / program["name"]
        directory.mkdir(exist_ok=True)
        for old in directory.iterdir():
            if old.name != file:
                old.unlink()
        write(directory / file, "\n".join(text) + "\n")
        targets[program["name"]] = segments
    manifest += ["    ]", ")", ""]
    write(package / "Package.swift", "\n".join(manifest))
    for old in sources.iterdir():
        if old.name not in targets:
            for child in old.iterdir():
                child.unlink()
            old.rmdir()
    save("targets.json", targets)
    # The dependencies whose products the excerpts name, to be read from their checkouts.
    named = set()
    for block in blocks:
        manifest = load(f"excerpts/{block['index']}/dump.json") if block["kind"] == "excerpt" else None
        for target in (manifest or {}).get("targets", []):
            for dependency in target.get("dependencies", []):
                if "product" in dependency and dependency["product"][1] in dependencies:
                    named.add(dependency["product"][1])
    for name in sorted(named):
        print(name)


def write(path, text):
    """Writes only a change, so that an unchanged program is not compiled again."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def checkout(state, identity):
    """The checkout of a dependency, as SwiftPM's workspace state records it."""
    dependencies = json.loads(Path(state).read_text())["object"]["dependencies"] if Path(state).exists() else []
    for dependency in dependencies:
        if dependency["packageRef"]["identity"] == identity:
            print(Path(state).parent / "checkouts" / dependency["subpath"])
            return
    fail(f"check-snippets: the products of {identity} are not known: the build resolved no checkout of it")


def version(text):
    return tuple(int(part) for part in re.findall(r"\d+", text.split("-")[0])[:3])


def check_excerpts():
    """Every package and product an excerpt names exists, as this package and its dependencies say."""
    identity, libraries, dependencies, _ = repository()
    for block in load("blocks.json"):
        if block["kind"] != "excerpt":
            continue
        manifest = load(f"excerpts/{block['index']}/dump.json")
        if manifest is None:
            continue
        where = lambda pattern: f"{block['file']}:{line_of(block, pattern)}"
        declared = set()
        for dependency in [] if block["wrapped_packages"] else manifest["dependencies"]:
            for kind, entries in dependency.items():
                entry = entries[0]
                name = entry["identity"]
                declared.add(name)
                if name == identity:
                    continue
                if kind == "fileSystem" or name not in dependencies:
                    fail(f"{where(re.escape(name))}: error: .package: {name} is neither this package ({identity}) nor one of "
                         "its dependencies")
                    continue
                ours = dependencies[name]
                url = entry["location"]["remote"][0]["urlString"]
                expected = ours["location"]["remote"][0]["urlString"]
                if url.lower().removesuffix(".git") != expected.lower().removesuffix(".git"):
                    fail(f"{where(re.escape(url))}: error: .package: {url}: this package takes {name} from {expected}")
                range_, ours_range = entry["requirement"].get("range"), ours["requirement"].get("range")
                if range_ and ours_range:
                    low = max(version(range_[0]["lowerBound"]), version(ours_range[0]["lowerBound"]))
                    high = min(version(range_[0]["upperBound"]), version(ours_range[0]["upperBound"]))
                    if low >= high:
                        fail(f"{where(re.escape(url))}: error: .package: {name} {range_[0]['lowerBound']}..<"
                             f"{range_[0]['upperBound']} cannot meet this package's {ours_range[0]['lowerBound']}..<"
                             f"{ours_range[0]['upperBound']}")
        for target in manifest["targets"]:
            for dependency in target.get("dependencies", []):
                if "product" not in dependency:
                    continue
                product, package = dependency["product"][0], dependency["product"][1]
                location = where(r'name:\s*"' + re.escape(product) + '"')
                if declared and package not in declared:
                    fail(f"{location}: error: .product({product}): package {package} is not among the excerpt's dependencies")
                if package == identity:
                    products = libraries
                elif package in dependencies:
                    theirs = load(f"deps/{package}.json")
                    if theirs is None:
                        continue
                    products = {p["name"] for p in theirs["products"] if "library" in p["type"]}
                else:
                    fail(f"{location}: error: .product({product}): {package} is neither this package nor one of its dependencies")
                    continue
                if product not in products:
                    fail(f"{location}: error: .product({product}): {package} has no such library (it has "
                         f"{', '.join(sorted(products))})")


def collect(status):
    """Puts the build's diagnostics on the Markdown files' lines; prints the programs that failed,
    which the next build leaves out so that their errors hide no other program's."""
    targets = load("targets.json", {})
    blocks = load("blocks.json")
    log = (work / "build.log").read_text()
    seen, failed, unmapped = set(), set(), []
    diagnostic = re.compile(r"^(/\S*?/pkg/Sources/([^/]+)/[^/:]+\.swift):(\d+):(\d+): (error|warning): (.*)$")
    missing = re.compile(r"error: 'pkg': product '([^']+)' required by package 'pkg' target '([^']+)' not found in package '([^']+)'")
    imports = re.compile(r"error: Target (\S+) imports another target \((\S+)\) in the package without declaring it a dependency")
    for line in log.split("\n"):
        match = diagnostic.match(line)
        if match and match.group(2) in targets:
            number = int(match.group(3))
            for segment in targets[match.group(2)]:
                if segment["start"] <= number < segment["start"] + segment["count"]:
                    place = f"{segment['file']}:{segment['first'] + number - segment['start']}:{match.group(4)}"
                    text = f"{place}: {match.group(5)}: {match.group(6)} (in the block at line {segment['fence']})"
                    if text not in seen:
                        seen.add(text)
                        if match.group(5) == "error":
                            fail(text)
                            failed.add(match.group(2))
                        else:
                            print(text, file=sys.stderr)
            continue
        match = missing.search(line)
        if match and match.group(2) in targets:
            segment = targets[match.group(2)][0]
            fail(f"{segment['file']}:{segment['fence']}: error: target {match.group(2)}: {match.group(3)} has no product "
                 f"{match.group(1)}")
            failed.add(match.group(2))
            continue
        match = imports.search(line)
        if match and match.group(1) in targets:
            segment = targets[match.group(1)][0]
            block = next(b for b in blocks if b["file"] == segment["file"] and b["fence"] == segment["fence"])
            pattern = r"import\s+" + re.escape(match.group(2)) + r"\b"
            fail(f"{segment['file']}:{line_of(block, pattern)}: error: import {match.group(2)}: not among the "
                 f"dependencies of target {match.group(1)}")
            failed.add(match.group(1))
            continue
        if re.search(r"\berror:", line):
            unmapped.append(line)
    if status != "0" and not failed:
        fail("\n".join(unmapped) or "\n".join(log.strip().split("\n")[-30:]))
    excluded = set(load("excluded.json", []))
    save("excluded.json", sorted(excluded | failed))
    for name in sorted(failed - excluded):
        print(name)


def summary():
    """What was checked; fails if anything did not pass."""
    blocks = load("blocks.json")
    compiled = sum(b["kind"] in ("program", "target", "continues") for b in blocks)
    programs = sum(b["kind"] in ("program", "target") for b in blocks)
    excerpts = sum(b["kind"] == "excerpt" for b in blocks)
    fragments = [f"{b['file']}:{b['fence']}" for b in blocks if b["kind"] == "fragment"]
    files = sorted({b["file"] for b in blocks})
    text = (f"{compiled} Swift block(s) in {programs} program(s), {excerpts} Package.swift excerpt(s), "
            f"{len(fragments)} fragment(s) skipped{' (' + ', '.join(fragments) + ')' if fragments else ''}, "
            f"from {len(files)} file(s)")
    errors = (work / "errors.txt").read_text().strip() if (work / "errors.txt").exists() else ""
    if errors:
        print(errors, file=sys.stderr)
        print(f"check-snippets: FAILED; checked {text}", file=sys.stderr)
        sys.exit(1)
    print(f"check-snippets: all compile: {text}")


command = sys.argv[1]
if command == "extract":
    extract(sys.argv[3:])
elif command == "excerpt-failed":
    excerpt_failed(sys.argv[3])
elif command == "generate":
    generate(sys.argv[3])
elif command == "checkout":
    checkout(sys.argv[3], sys.argv[4])
elif command == "excerpts":
    check_excerpts()
elif command == "collect":
    collect(sys.argv[3])
elif command == "summary":
    summary()
PYTHON
snippets() { python3 "$work/snippets.py" "$1" "$work" "${@:2}"; }

# The Swift blocks, and each Package.swift excerpt compiled as a manifest of its own.
excerpts=$(snippets extract README.md Sources/*/Documentation.docc/*.md)
for directory in $excerpts; do
    swift package --package-path "$directory" dump-package >"$directory/dump.json" 2>"$directory/dump.log" ||
        { rm -f "$directory/dump.json"; snippets excerpt-failed "$(basename "$directory")"; }
done

# This package's products and dependencies (its manifest is read with a scratch path of its
# own, so that this does not wait for a build holding .build's lock).
swift package --package-path "$root" --scratch-path "$scratch/manifest" dump-package >"$work/repo.json"

# The throwaway package: one build for every program; imports must be among each target's
# declared dependencies. A program that fails is left out of the next build, which shows the
# errors it hid.
named=$(snippets generate "$scratch" "$root")
while :; do
    status=0
    swift build --package-path "$scratch/pkg" --explicit-target-dependency-import-check error >"$work/build.log" 2>&1 ||
        status=$?
    failed=$(snippets collect "$status")
    if [ "$status" = 0 ] || [ -z "$failed" ]; then break; fi
    snippets generate "$scratch" "$root" >/dev/null
done

# The products of the dependencies that the excerpts name, from the checkouts the build resolved.
mkdir -p "$work/deps"
for package in $named; do
    checkout=$(snippets checkout "$scratch/pkg/.build/workspace-state.json" "$package")
    [ -n "$checkout" ] || continue
    swift package --package-path "$checkout" --scratch-path "$scratch/manifest-$package" dump-package >"$work/deps/$package.json"
done
snippets excerpts
snippets summary
