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
    """Every class a transformers or torch source defines, its methods, the transformers functions, tokenizers' parts."""
    names = set()
    for package in (Path(transformers.__file__).parent, Path(__import__("torch").nn.__file__).parent):
        for path in package.rglob("*.py"):
            text = path.read_text(errors="ignore")
            names |= set(re.findall(r"^class (\w+)\b", text, re.M))
            owner = None
            for line in text.splitlines():  # Class.method of each method a class defines
                if match := re.match(r"class (\w+)\b", line):
                    owner = match.group(1)
                elif owner and (match := re.match(r"    def (\w+)\(", line)):
                    names.add(f"{owner}.{match.group(1)}")
            if package.name == "transformers":
                module = "transformers." + ".".join(path.relative_to(package).with_suffix("").parts)
                names |= {f"{module}.{f}" for f in re.findall(r"^def (\w+)\(", text, re.M)}
    import tokenizers

    for part in ("processors", "normalizers", "pre_tokenizers", "models", "decoders"):
        names |= {f"tokenizers.{n}" for n in dir(getattr(tokenizers, part)) if n[:1].isupper()}
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    names |= {f"attn_implementation:{n}" for n in ("eager", *ALL_ATTENTION_FUNCTIONS.keys())}
    return names


def test_components_name_the_attention_in_use():
    """A finding about the eager path applies where eager is what runs, not to every model that has one."""
    from properties.findings import components
    from tests.planted import healthy
    from zoo.catalog import build_catalog_subject

    assert "attn_implementation:sdpa" in components(healthy("bert"))
    assert "attn_implementation:eager" not in components(healthy("bert"))
    assert "attn_implementation:eager" in components(build_catalog_subject("gemma2-base"))  # softcapping: eager


def test_entries_are_complete():
    for finding in load_findings():
        assert "\n" not in finding.reason, f"reason must be one line: {finding.key}"
        assert finding.input.strip(), f"{finding.key}: record the shrunk input"
        re.compile(finding.match)


def test_keys_tell_entries_apart():
    """The run's summary and the coverage report count findings by key: two entries under one key
    would show one entry's reason beside the other's tests."""
    keys = [f.key for f in load_findings()]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    generation = [k for k in keys if k.startswith("GenerationMixin :: test_continued_generate_matches_one_call")]
    assert "GenerationMixin :: test_continued_generate_matches_one_call (capabilities encoder_decoder+text)" in generation


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


# -- a recorded finding is not shrunk again; a new failure of the same test is ------------------
pytest_plugins = ["pytester"]

RECORDED_CONFTEST = '''
import pytest
from properties.findings import Finding, _ITEM_FINDINGS

pytest_plugins = ["properties.findings"]
FINDING = Finding(component="X", property="test_*", reason="upstream", input="n=10", match="recorded")

def pytest_collection_modifyitems(items):
    for item in items[:2]:  # as mark_findings marks the tests a finding describes
        item.stash[_ITEM_FINDINGS] = [FINDING]
        item.add_marker(pytest.mark.xfail(reason=FINDING.reason, strict=True))
'''

RECORDED_TESTS = '''
from hypothesis import given, settings, strategies as st

CALLS = []

@settings(max_examples=50, derandomize=True, database=None)
@given(st.integers(0, 10**6))
def test_recorded(n):
    CALLS.append(n)
    assert n < 10, "recorded"

@settings(max_examples=50, derandomize=True, database=None)
@given(st.integers(0, 10**6))
def test_new(n):
    assert n < 10, "new"

def test_calls():  # runs last: the recorded failure ran its examples and did not shrink them
    assert len(CALLS) <= 3, CALLS
'''


def test_recorded_finding_not_shrunk_new_failure_shrunk(pytester, monkeypatch):
    import sys

    from properties import findings

    monkeypatch.setattr(findings, "_MET", {})  # the inner run's findings are not this run's
    pytester.syspathinsert(str(ROOT))
    pytester.makeconftest(RECORDED_CONFTEST)
    pytester.makepyfile(test_inner=RECORDED_TESTS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:randomly", "-rA")
    result.assert_outcomes(xfailed=1, failed=1, passed=1)
    out = result.stdout.str()
    assert "NOT the recorded finding" in out and "n=10," in out, out  # the new failure, shrunk to 10
    sys.modules.pop("test_inner", None)
