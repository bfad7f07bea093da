"""Every test the docs cite as `file::test` exists: the file (a path from the repository root, or a name under
tests/) and in it a function of that name, found by parsing the file. A renamed or removed test makes its citation
fail here, with the doc and line that cite it."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITATION = re.compile(r"([\w./-]+\.py)::(\w+)")


def docs() -> list[Path]:
    return [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


def cited_files(name: str) -> list[Path]:
    """The test files a citation's file part names: a path from the root, else every tests/ file of that name."""
    path = ROOT / name
    if "/" in name:
        return [path] if path.is_file() else []
    return sorted(p for p in (ROOT / "tests").rglob(name) if p.is_file())


def functions(path: Path) -> set[str]:
    """The names of every function and class defined in a file, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def stale_citations(paths: list[Path]) -> list[str]:
    """`doc:line: file::test: why` for each citation that names no test."""
    out = []
    for doc in paths:
        for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
            for file, name in CITATION.findall(line):
                where = f"{doc.relative_to(ROOT) if doc.is_relative_to(ROOT) else doc}:{n}: {file}::{name}"
                found = cited_files(file)
                if not found:
                    out.append(f"{where}: no test file {file}")
                elif len(found) > 1:
                    out.append(f"{where}: {file} names {len(found)} files; give its path from the repository root")
                elif name not in functions(found[0]):
                    out.append(f"{where}: {found[0].relative_to(ROOT)} defines no {name}")
    return out


def test_every_test_the_docs_cite_exists():
    cited = [m for doc in docs() for m in CITATION.findall(doc.read_text(encoding="utf-8"))]
    assert len(cited) > 10  # the check reads the citations the docs hold, not none
    assert stale_citations(docs()) == []


def test_a_citation_of_a_test_that_is_gone_is_named_with_its_doc_and_line(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("ok: `test_docs_citations.py::test_every_test_the_docs_cite_exists`\n"
                   "| x | `tests/faults/test_server_faults.py::test_renamed_long_ago` |\n"
                   "and `test_nowhere.py::test_x`\n")
    assert stale_citations([doc]) == [
        f"{doc}:2: tests/faults/test_server_faults.py::test_renamed_long_ago: tests/faults/test_server_faults.py "
        "defines no test_renamed_long_ago",
        f"{doc}:3: test_nowhere.py::test_x: no test file test_nowhere.py"]
