#!/usr/bin/env python3
"""Checks the tree's layout rules (docs/architecture.md, "Rules of the tree"):

  1. every #include "..." names a file that exists (from the repository root, or beside the file);
  2. includes point one way: server -> engine -> {scheduler, kernels} -> config -> common, and
     inside engine/ the sub-folders (model/, tokenizer/, template/, sampling/) never include the
     engine's own files (engine/*.h: the engine thread, runner, KV cache, ...) nor anything in
     server/; among themselves they follow SUBFOLDER_DEPS below; server/ sees the engine's public
     headers only (no *_impl.h, nothing of the step loop's internals);
  3. no source file is over MAX_LINES lines;
  4. no two sources that go into one static library share a base name (ar keeps base names only,
     and `ar r` replaces a member of the same name: one object would silently be lost).

Usage: scripts/check-layout.py [ROOT]. Prints each rule with every place that breaks it, then
"N passed, N failed" (one check per rule), and exits 1 when any rule is broken.
"""
import os
import re
import sys

MAX_LINES = 1000
SOURCE_EXT = (".c", ".h", ".cu", ".cuh")
CHECKED_DIRS = ("common", "config", "kernels", "scheduler", "engine", "server", "bench", "tests")

# engine/ sub-folders and the other sub-folders each may include (an acyclic order).
SUBFOLDER_DEPS = {
    "engine/model": set(),                 # GGUF, safetensors, weights, config, the forward
    "engine/template": set(),              # Jinja
    "engine/tokenizer": {"engine/model"},  # reads the vocabulary from GGUF metadata (gguf.h)
    "engine/sampling": {"engine/tokenizer"},  # stop rules look at end-of-generation tokens
}

# The step loop's own headers: nothing outside engine/ (tests and benchmarks aside) sees them.
ENGINE_PRIVATE = ("engine/engine_impl.h", "engine/runner.h", "engine/kv_cache.h", "engine/tp.h",
                  "engine/gpu_runner.h")

INCLUDE_RE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"', re.M)


def area(path):
    """The folder whose rules apply to path: 'engine/model', 'engine', 'server', 'kernels', ..."""
    parts = path.split("/")
    if parts[0] == "engine" and len(parts) > 2:
        return "engine/" + parts[1]
    return parts[0]


def allowed(src, dst):
    """None when src may include dst (both repository paths), else the reason it may not."""
    a, b = area(src), area(dst)
    if a in ("tests", "bench"):
        return None  # tests and benchmarks reach anything
    if b in ("tests", "bench"):
        return "product code includes %s" % b + "/"
    if a == b:
        return None
    lower = {
        "common": set(),
        "config": {"common"},
        "kernels": {"common"},
        "scheduler": {"common", "config"},
    }
    if a in lower:
        return None if b in lower[a] else "%s/ may include only %s" % (
            a, ", ".join(sorted(x + "/" for x in lower[a])) or "itself")
    if a in SUBFOLDER_DEPS:
        if b == "engine":
            return "an engine/ sub-folder includes the engine's own %s (the engine uses its rooms, not the reverse)" % dst
        if b == "server":
            return "engine/ includes server/"
        if b in SUBFOLDER_DEPS:
            return None if b in SUBFOLDER_DEPS[a] else "%s/ may not include %s/ (allowed: %s)" % (
                a, b, ", ".join(sorted(x + "/" for x in SUBFOLDER_DEPS[a])) or "none")
        return None if b in ("common", "config", "kernels", "scheduler") else "%s/ includes %s" % (a, dst)
    if a == "engine":
        return "engine/ includes server/" if b == "server" else None
    if a == "server":
        if dst in ENGINE_PRIVATE or dst.endswith("_impl.h") or dst.startswith("kernels/cuda/"):
            return "server/ includes the engine's internals (%s); use engine/engine.h" % dst
        return None
    return None


def sources(root):
    for top in CHECKED_DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames[:] = sorted(d for d in dirnames if d not in ("data", "__pycache__"))
            for f in sorted(filenames):
                if f.endswith(SOURCE_EXT):
                    yield os.path.relpath(os.path.join(dirpath, f), root)


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    files = list(sources(root))
    broken = {"resolve": [], "direction": [], "size": [], "objects": []}

    for path in files:
        with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
            text = f.read()
        n_lines = text.count("\n")
        if n_lines > MAX_LINES:
            broken["size"].append("%s: %d lines (at most %d: split it)" % (path, n_lines, MAX_LINES))
        for m in INCLUDE_RE.finditer(text):
            inc = m.group(1)
            where = '%s:%d: #include "%s"' % (path, text.count("\n", 0, m.start()) + 1, inc)
            beside = os.path.normpath(os.path.join(os.path.dirname(path), inc))
            if os.path.isfile(os.path.join(root, beside)):
                target = beside
            elif os.path.isfile(os.path.join(root, inc)):
                target = inc
            else:
                broken["resolve"].append(where + ": no such file")
                continue
            why = allowed(path, target)
            if why:
                broken["direction"].append(where + ": " + why)

    # what the Makefile puts in one library: the product folders' .c files (libsluice.a, and
    # server/ in libsluice_server.a), every .cu (libsluice_cuda.a)
    libs = {}
    for path in files:
        if area(path) in ("tests", "bench") or not path.endswith((".c", ".cu")):
            continue
        lib = "cuda" if path.endswith(".cu") else ("server" if area(path) == "server" else "core")
        libs.setdefault((lib, os.path.splitext(os.path.basename(path))[0]), []).append(path)
    for (lib, base), paths in sorted(libs.items()):
        if len(paths) > 1:
            broken["objects"].append("%s all make %s.o in one library" % (", ".join(paths), base))

    # one check per rule, every breach of it listed
    for rule, msgs in broken.items():
        print("%s %s (%d files)" % ("FAIL" if msgs else "ok  ", RULES[rule], len(files)))
        for msg in msgs:
            print("  " + msg)
    failed = sum(1 for msgs in broken.values() if msgs)
    print("%d passed, %d failed" % (len(broken) - failed, failed))
    return 1 if failed else 0


RULES = {
    "resolve": "every #include names a file that exists",
    "direction": "includes point one way (server -> engine -> its rooms and scheduler/kernels -> config -> common)",
    "size": "no source file over %d lines" % MAX_LINES,
    "objects": "no two objects of one library share a base name",
}


if __name__ == "__main__":
    sys.exit(main())
