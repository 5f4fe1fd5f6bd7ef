#!/usr/bin/env python3
"""Import circles between the modules (files) of a crate.

Usage: modcycles.py CRATE_SRC_DIR [--graph]

A module is one file (`a/mod.rs` and `a.rs` are module `a`). An edge A -> B
is any path in A that names an item of B: `crate::b::...` (in `use` lines
and in code) and `super::...`, resolved to the deepest module that exists.
Unit tests (`#[cfg(test)] mod tests`) are left out. A glob (`use super::*`) is an edge to that module. Paths without
`crate::` or `super::` (a parent calling `child::f`, a method defined in a
child's `impl` block) are not seen: a module and the modules it declares
are read as one unit in that direction only. Every strongly connected set
of more than one module is printed, and the exit status is 1 if there is
any.
"""
import os
import re
import sys

root = sys.argv[1].rstrip("/")
show = "--graph" in sys.argv

modules = {}
for d, _, files in os.walk(root):
    for f in files:
        if not f.endswith(".rs"):
            continue
        p = os.path.join(d, f)
        rel = os.path.relpath(p, root)[:-3].split(os.sep)
        if rel[-1] in ("mod", "lib", "main"):
            rel = rel[:-1]
        modules[tuple(rel)] = p

PATH = re.compile(r"\b(crate|super)((?:::(?:super|[A-Za-z_][A-Za-z0-9_]*))*)(?:::\*)?")
USE_GROUP = re.compile(r"\buse\s+(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\}", re.S)


def strip(text):
    """Code without comments, string and character literals."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif (m := re.match(r'b?r(#*)"', text[i:])) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            close = '"' + m.group(1)
            j = text.find(close, i + m.end())
            out.append('""')
            i = n if j < 0 else j + len(close)
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            out.append('""')
            i += 1
        elif c == "'" and (m := re.match(r"'(?:\\.[^']*|[^\\'])'", text[i:])):
            out.append("' '")
            i += m.end()
        else:
            out.append(c)
            i += 1
    text = "".join(out)
    # unit tests (`#[cfg(test)] mod tests { .. }`) may use any module
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
        if not m:
            break
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        text = text[: m.start()] + text[i:]
    # visibility is not a use
    text = re.sub(r"\bpub\s*\(\s*(?:crate|super|self|in\s+[\w:]+)\s*\)", "pub", text)
    return text


def deepest(parts):
    for n in range(len(parts), -1, -1):
        if tuple(parts[:n]) in modules:
            return tuple(parts[:n])
    return ()


def resolve(me, head, rest):
    if head == "crate":
        base = []
    else:
        base = list(me[:-1])
    for p in rest:
        if p == "super":
            base = base[:-1]
        else:
            base.append(p)
    return deepest(base)


edges = {m: set() for m in modules}
for me, path in modules.items():
    text = strip(open(path, encoding="utf-8").read())
    targets = []
    for m in USE_GROUP.finditer(text):
        head, prefix = m.group(1), [p for p in m.group(2).split("::") if p]
        for item in re.split(r",", m.group(3)):
            item = item.strip().split(" as ")[0].strip()
            item = re.sub(r"[{}\s]", "", item)
            if item:
                targets.append((head, prefix + [p for p in item.split("::") if p and p != "self" and p != "*"]))
    for m in PATH.finditer(text):
        targets.append((m.group(1), [p for p in m.group(2).split("::") if p]))
    for head, rest in targets:
        t = resolve(me, head, rest)
        if t != me:
            edges[me].add(t)

# Tarjan's strongly connected components
index, low, on, stack, sccs = {}, {}, set(), [], []
counter = [0]
sys.setrecursionlimit(10000)


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in sorted(edges[v]):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        sccs.append(comp)


for v in sorted(modules):
    if v not in index:
        visit(v)


def name(m):
    return "::".join(("crate",) + m)


if show:
    for m in sorted(edges):
        for t in sorted(edges[m]):
            print(f"{name(m)} -> {name(t)}")
bad = [sorted(c) for c in sccs if len(c) > 1]
for c in bad:
    print(f"import circle of {len(c)} modules:")
    for m in c:
        inside = sorted(name(t) for t in edges[m] if t in c)
        print(f"  {modules[m]} uses {', '.join(inside)}")
if bad:
    sys.exit(1)
print(f"no import circle among the {len(modules)} modules of {root}")
