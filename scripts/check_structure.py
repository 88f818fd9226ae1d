#!/usr/bin/env python3
"""Checks two rules of src/: no import circle between modules, and no function over 60 lines.

Modules: every .rs file is one (a `mod.rs` stands for its folder). A module uses another when it
names it by path (`crate::a::b`, `super::x`, `self::x`, in `use` lines or inline). Circles are
looked for between files; a module and the modules inside it (its parts: `session` and
`session::flight`) are not an edge either way, since `impl Session` in a part names its parent. Test-only code (`#[cfg(test)] mod tests { … }` at the end of a file,
and `gate_loom_tests.rs`) is left out of the graph.

Functions: from a line declaring `fn` to its closing brace, in all of src/ (tests included).
"""
import os
import re
import sys
from collections import defaultdict

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
MAX_FN_LINES = 60


def module_of(path):
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib"):
        rel = rel[:-1]
    return tuple(rel)


def strip_comments_and_strings(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return text


def cut_tests(text):
    m = re.search(r"#\[cfg\(test\)\]\s*mod tests\s*\{", text)
    return text[: m.start()] if m else text


def paths_in(text):
    """Every `crate::…`, `super::…`, `self::…` path, with `use` groups expanded."""
    out = []
    for m in re.finditer(r"\b(crate|super|self)((?:::\w+)*)(::\{)?", text):
        head = [m.group(1)] + [p for p in m.group(2).split("::") if p]
        if m.group(3):
            depth, i = 1, m.end()
            while depth and i < len(text):
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            for item in split_group(text[m.end() : i - 1]):
                out.append(head + item)
        else:
            out.append(head)
    return out


def split_group(body):
    items, depth, cur = [], 0, ""
    for ch in body + ",":
        if ch == "," and depth == 0:
            cur = cur.strip()
            if cur:
                if "{" in cur:
                    pre, inner = cur.split("{", 1)
                    pre = [p for p in pre.strip().rstrip(":").split("::") if p]
                    for sub in split_group(inner.rsplit("}", 1)[0]):
                        items.append(pre + sub)
                else:
                    items.append([p.split(" as ")[0].strip() for p in cur.split("::") if p])
            cur = ""
        else:
            depth += {"{": 1, "}": -1}.get(ch, 0)
            cur += ch
    return items


def resolve(mod, path, modules):
    if path[0] == "crate":
        base, rest = (), path[1:]
    else:
        base, rest = mod, path[1:]
        if path[0] == "super":
            base = base[:-1]
            while rest and rest[0] == "super":
                base, rest = base[:-1], rest[1:]
    target = base
    for part in rest:
        if target + (part,) in modules:
            target = target + (part,)
        else:
            break
    return target


def find_cycle(nodes, edges):
    color, stack = {}, []

    def visit(n):
        color[n] = 1
        stack.append(n)
        for m in sorted(edges[n]):
            if color.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in color:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        color[n] = 2
        return None

    for n in sorted(nodes):
        if n not in color:
            c = visit(n)
            if c:
                return c
    return None


def main():
    files = []
    for d, _, names in os.walk(ROOT):
        files += [os.path.join(d, n) for n in names if n.endswith(".rs")]
    modules = {module_of(f): f for f in files}
    uses = defaultdict(set)
    problems = []
    for f in files:
        mod = module_of(f)
        raw = open(f, encoding="utf-8").read()
        if not f.endswith("gate_loom_tests.rs"):
            text = strip_comments_and_strings(cut_tests(raw))
            for p in paths_in(text):
                t = resolve(mod, p, modules)
                if t != mod:
                    uses[mod].add(t)
        problems += long_functions(f, raw)
    edges = defaultdict(set)
    for a, targets in uses.items():
        for t in targets:
            if t[: len(a)] != a and a[: len(t)] != t:
                edges[a].add(t)
    cycle = find_cycle(set(modules), edges)
    if cycle:
        problems.append("import circle: " + " -> ".join("::".join(c) or "crate" for c in cycle))
    for p in problems:
        print(p)
    print(f"{len(modules)} modules, {len(problems)} problems")
    return 1 if problems else 0


def long_functions(path, raw):
    out = []
    lines = raw.split("\n")
    i = 0
    while i < len(lines):
        if re.match(r"\s*(pub(\([^)]*\))?\s+)?(const\s+)?(unsafe\s+)?(extern\s+\"C\"\s+)?fn\s+\w+", lines[i]):
            depth, started, j = 0, False, i
            while j < len(lines):
                code = strip_comments_and_strings(lines[j])
                if not started and ";" in code and "{" not in code:
                    break
                for ch in code:
                    if ch == "{":
                        depth += 1
                        started = True
                    elif ch == "}":
                        depth -= 1
                if started and depth == 0:
                    break
                j += 1
            n = j - i + 1
            if started and n > MAX_FN_LINES:
                name = re.search(r"fn\s+(\w+)", lines[i]).group(1)
                out.append(f"{os.path.relpath(path, ROOT)}:{i + 1}: fn {name} is {n} lines (> {MAX_FN_LINES})")
        i += 1
    return out


if __name__ == "__main__":
    sys.exit(main())
