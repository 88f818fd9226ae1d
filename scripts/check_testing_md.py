#!/usr/bin/env python3
"""Checks that TESTING.md names only files and functions that exist.

    scripts/check_testing_md.py              # every reference in TESTING.md
    scripts/check_testing_md.py --complete   # and every #[test] under tests/ is indexed
    scripts/check_testing_md.py OTHER.md     # another file

References, anywhere in the text (prose, tables, code blocks; URLs are skipped):
- `path.rs`: the file must exist (paths are from the repository root, so a bare
  `client.rs` is reported: say which one);
- `path.rs::name`, `path.rs::tests::name`, ...: the file must exist and hold `fn name`
  (the last segment);
- a code span naming a directory of the repository (`src/session/`, `tests/harness/`;
  under src, tests, scripts, benches, examples or fuzz): the directory must exist.

With --complete, every `#[test]` function under tests/ must also be named as
`tests/<file>.rs::<function>`: the behaviour index misses nothing.

Exit status 1 when something is wrong, with one line per problem. Python 3 standard
library only.
"""

import re
import subprocess
import sys
from pathlib import Path

REF = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w.-]+\.rs)((?:::\w+)*)(?![\w/])")
DIR_SPAN = re.compile(r"`((?:src|tests|scripts|benches|examples|fuzz)/(?:[\w.-]+/)*)`")
URL = re.compile(r"https?://\S+")


def repo_root() -> Path:
    out = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=False
    )
    if out.returncode == 0:
        return Path(out.stdout.strip())
    return Path(__file__).resolve().parent.parent


def has_fn(path: Path, name: str, cache: dict) -> bool:
    if path not in cache:
        cache[path] = path.read_text(encoding="utf-8")
    return re.search(r"\bfn\s+" + re.escape(name) + r"\b", cache[path]) is not None


def test_functions(root: Path):
    """(path, name) of every #[test] function under tests/."""
    for path in sorted((root / "tests").rglob("*.rs")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.strip() != "#[test]":
                continue
            for follow in lines[i + 1 :]:
                m = re.match(r"\s*(?:pub\s+)?fn\s+(\w+)", follow)
                if m:
                    yield path.relative_to(root).as_posix(), m.group(1)
                    break


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    complete = "--complete" in sys.argv[1:]
    root = repo_root()
    doc = root / (args[0] if args else "TESTING.md")
    text = doc.read_text(encoding="utf-8")
    problems = []
    cache: dict = {}
    named = set()
    files = functions = dirs = 0
    for number, line in enumerate(text.splitlines(), 1):
        line = URL.sub("", line)
        for m in REF.finditer(line):
            file, segments = m.group(1), m.group(2)
            path = root / file
            where = f"{doc.name}:{number}"
            if not path.is_file():
                problems.append(f"{where}: no file {file}")
                continue
            files += 1
            if segments:
                name = segments.rsplit("::", 1)[1]
                functions += 1
                named.add((file, name))
                if not has_fn(path, name, cache):
                    problems.append(f"{where}: no fn {name} in {file}")
        for m in DIR_SPAN.finditer(line):
            dirs += 1
            if not (root / m.group(1)).is_dir():
                problems.append(f"{doc.name}:{number}: no directory {m.group(1)}")
    missing = 0
    if complete:
        for file, name in test_functions(root):
            if (file, name) not in named:
                missing += 1
                problems.append(f"{doc.name}: test {file}::{name} is not indexed")
    for p in problems:
        print(p)
    print(
        f"{doc.name}: {files} file references ({functions} with a function), "
        f"{dirs} directories checked"
        + (f"; {missing} tests under tests/ not indexed" if complete else "")
        + (f"; {len(problems)} problem(s)" if problems else "; all exist")
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
