"""The findings list is the report of upstream findings: every entry well formed, naming real tests
and real components, with a match that describes its failure."""

import fnmatch
import re
from functools import cache
from pathlib import Path

import transformers

from properties.findings import _patterns, load_findings

ROOT = Path(__file__).resolve().parents[1]


@cache
def property_tests() -> set[str]:
    """Every property test function name."""
    names = set()
    for path in (ROOT / "properties").glob("test_*.py"):
        names |= set(re.findall(r"^def (test_\w+)\(", path.read_text(), re.M))
    return names


@cache
def component_names() -> set[str]:
    """Every class a transformers or torch source defines, the transformers functions, tokenizers' parts."""
    names = set()
    for package in (Path(transformers.__file__).parent, Path(__import__("torch").nn.__file__).parent):
        for path in package.rglob("*.py"):
            text = path.read_text(errors="ignore")
            names |= set(re.findall(r"^class (\w+)\b", text, re.M))
            if package.name == "transformers":
                module = "transformers." + ".".join(path.relative_to(package).with_suffix("").parts)
                names |= {f"{module}.{f}" for f in re.findall(r"^def (\w+)\(", text, re.M)}
    import tokenizers

    for part in ("processors", "normalizers", "pre_tokenizers", "models", "decoders"):
        names |= {f"tokenizers.{n}" for n in dir(getattr(tokenizers, part)) if n[:1].isupper()}
    return names


def test_entries_are_complete():
    for finding in load_findings():
        assert "\n" not in finding.reason, f"reason must be one line: {finding.key}"
        assert finding.input.strip(), f"{finding.key}: record the shrunk input"
        re.compile(finding.match)


def test_every_entry_names_property_tests():
    stale = [f.key for f in load_findings()
             if not any(fnmatch.fnmatchcase(t, p) for t in property_tests() for p in _patterns(f.property))]
    assert not stale, f"findings that name no property test (renamed or removed?): {stale}"


def test_every_entry_names_a_real_component():
    known = component_names()
    unknown = [f.key for f in load_findings()
               if not any(fnmatch.fnmatchcase(n, p) for n in known for p in _patterns(f.component))]
    assert not unknown, f"findings whose component matches no transformers/torch/tokenizers name: {unknown}"


def test_versions_are_specifiers():
    from packaging.specifiers import SpecifierSet

    for finding in load_findings():
        if finding.versions:
            SpecifierSet(finding.versions)
