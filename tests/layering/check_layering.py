#!/usr/bin/env python3
"""Checks the module layering of bitmix (docs: /DESIGN.md "Modules", README "Layout").

Every file of a module (include/bitmix/<module>/..., include/bitmix/<module>.hpp,
src/<module>/...) may include headers of its own module and of the modules ALLOWED lists for it,
nothing higher. Both spellings count: "bitmix/<module>/x.hpp" (or the umbrella
"bitmix/<module>.hpp") and the internal "<module>/x.hpp" that src/ files use for private
headers. The link dependencies each src/<module>/CMakeLists.txt declares (bitmix::<module>) must
stay within the same table, and every module folder must have an entry.

Prints file:line for each offending include and exits 1; exits 0 when clean.
  check_layering.py [--root DIR]      check the tree (default: two levels above this script)
  check_layering.py --self-test       check that a tree with violations is refused
"""

import argparse
import os
import re
import sys
import tempfile

# The layering of DESIGN.md, written once: module -> the modules it may use. A change here is a
# change of the architecture; update DESIGN.md with it.
ALLOWED = {
    "core": set(),
    "support": {"core"},
    "data": {"core"},
    "quant": {"core"},
    "nn": {"core", "data", "quant", "support"},
    "search": {"core", "data", "quant", "nn", "support"},
    "kernels": {"core"},
    "runtime": {"kernels", "core"},
    "deploy": {"runtime", "kernels", "nn", "quant", "data", "core", "support"},
}

INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]')
CMAKE_DEP = re.compile(r"\bbitmix::([A-Za-z_0-9]+)")
HEADER_EXTENSIONS = (".hpp", ".h", ".cpp", ".cc", ".inc")


def included_module(path):
    """The module a quoted/angled include path refers to, or None (standard, third party)."""
    parts = path.split("/")
    if parts[0] == "bitmix":
        if len(parts) == 2 and parts[1].endswith(".hpp"):
            name = parts[1][: -len(".hpp")]
            return name if name in ALLOWED else None  # bitmix/bitmix.hpp: the umbrella of all
        return parts[1] if len(parts) > 2 and parts[1] in ALLOWED else None
    if len(parts) > 1 and parts[0] in ALLOWED:
        return parts[0]
    return None


def module_files(root):
    """(module, path) for every source and header that belongs to one module."""
    include_dir = os.path.join(root, "include", "bitmix")
    if os.path.isdir(include_dir):
        for entry in sorted(os.listdir(include_dir)):
            full = os.path.join(include_dir, entry)
            if os.path.isfile(full) and entry.endswith(".hpp") and entry[:-4] in ALLOWED:
                yield entry[:-4], full
    for base in (include_dir, os.path.join(root, "src")):
        if not os.path.isdir(base):
            continue
        for module in sorted(os.listdir(base)):
            top = os.path.join(base, module)
            if not os.path.isdir(top) or module not in ALLOWED:
                continue
            for dirpath, _, files in sorted(os.walk(top)):
                for name in sorted(files):
                    if name.endswith(HEADER_EXTENSIONS):
                        yield module, os.path.join(dirpath, name)


def check(root):
    problems = []
    src = os.path.join(root, "src")
    if os.path.isdir(src):
        for module in sorted(os.listdir(src)):
            cmake = os.path.join(src, module, "CMakeLists.txt")
            if not os.path.isfile(cmake):
                continue
            rel = os.path.relpath(cmake, root)
            if module not in ALLOWED:
                problems.append(f"{rel}:1: module '{module}' has no entry in the layering table "
                                f"(tests/layering/check_layering.py, DESIGN.md)")
                continue
            with open(cmake, encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    code = line.split("#", 1)[0]
                    for dep in CMAKE_DEP.findall(code):
                        if dep != module and dep not in ALLOWED[module]:
                            problems.append(f"{rel}:{number}: module '{module}' links bitmix::{dep} "
                                            f"(allowed: {', '.join(sorted(ALLOWED[module])) or 'none'})")
    for module, path in module_files(root):
        rel = os.path.relpath(path, root)
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                match = INCLUDE.match(line)
                if not match:
                    continue
                target = included_module(match.group(1))
                if target is None or target == module or target in ALLOWED[module]:
                    continue
                problems.append(f"{rel}:{number}: module '{module}' includes '{match.group(1)}' of module "
                                f"'{target}' (allowed: {', '.join(sorted(ALLOWED[module])) or 'none'})")
    return problems


def self_test():
    """A tree with one bad include of each spelling and one bad link dependency must give
    exactly those problems; the same tree without them none."""
    with tempfile.TemporaryDirectory() as root:
        def write(rel, text):
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        write("include/bitmix/kernels/conv.hpp", '#pragma once\n#include "bitmix/core/tensor.hpp"\n#include <vector>\n')
        write("include/bitmix/runtime.hpp", '#pragma once\n#include "bitmix/runtime/session.hpp"\n')
        write("src/runtime/session.cpp", '#include "bitmix/kernels/conv.hpp"\n#include "runtime/float_ops.hpp"\n')
        write("src/search/CMakeLists.txt", "bitmix_add_module(search\n  PUBLIC_DEPS bitmix::nn bitmix::core)\n")
        clean = check(root)
        if clean:
            print("self-test: a clean tree was refused:\n  " + "\n  ".join(clean))
            return 1
        write("include/bitmix/kernels/conv.hpp",
              '#pragma once\n#include "bitmix/core/tensor.hpp"\n#include "bitmix/nn/layers.hpp"\n')
        write("src/runtime/session.cpp", '#include "bitmix/kernels/conv.hpp"\n#include "nn/trainer_impl.hpp"\n')
        write("include/bitmix/runtime.hpp", '#pragma once\n#include <bitmix/deploy.hpp>\n')
        write("src/search/CMakeLists.txt",
              "bitmix_add_module(search\n  PUBLIC_DEPS bitmix::nn bitmix::core\n  PRIVATE_DEPS bitmix::kernels)\n")
        found = sorted(p.split(": ", 1)[0] for p in check(root))
        expected = sorted(["include/bitmix/kernels/conv.hpp:3", "src/runtime/session.cpp:2",
                           "include/bitmix/runtime.hpp:2", "src/search/CMakeLists.txt:3"])
        if found != expected:
            print(f"self-test: expected problems at {expected}, got {found}")
            return 1
    print("self-test: ok")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    root = os.path.abspath(args.root)
    problems = check(root)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} layering violation(s); the allowed dependencies are in "
              f"tests/layering/check_layering.py (DESIGN.md, 'Modules')")
        return 1
    print(f"layering ok: {sum(1 for _ in module_files(root))} files of {len(ALLOWED)} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
