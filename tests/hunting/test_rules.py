"""Rules from files and directories, compile errors with file and line, yara-x against yara-python."""

from __future__ import annotations

import pytest

from pensieve.hunting.rules import RuleError, load_rules, rule_files

RULE = """rule implant : evil {
  meta:
    severity = "critical"
    mitre = "T1105"
  strings:
    $a = "hello"
    $b = { 68 65 6c 6c 6f 20 77 }
  condition:
    any of them
}
"""


def test_rules_from_a_directory_recursively(tmp_path):
    (tmp_path / "sub" / "deep").mkdir(parents=True)
    (tmp_path / "a.yar").write_text(RULE)
    (tmp_path / "sub" / "deep" / "b.yara").write_text('rule implant { strings: $x = "zz" condition: $x }')
    (tmp_path / "sub" / "notes.txt").write_text("not a rule")
    files = rule_files([str(tmp_path)])
    assert [f.rsplit("/", 1)[-1] for f in files] == ["a.yar", "b.yara"]
    rules = load_rules([str(tmp_path)])  # the same rule name in two files: one namespace each
    hits = rules.scan(b"say hello world zz")
    assert sorted((h["namespace"].rsplit("/", 1)[-1], h["rule"]) for h in hits) == [
        ("a.yar", "implant"),
        ("b.yara", "implant"),
    ]
    assert {h["engine"] for h in hits} == {"yara-x"}


@pytest.mark.parametrize(
    "text, line",
    [
        ('rule bad {\n  strings: $a = "x"\n  condition: $a and nothing_here\n}\n', 3),
        ("rule ok { condition: true }\n\nrule broken {\n  condition\n}\n", 5),
        ('rule r {\n strings:\n  $a = "unterminated\n condition: $a }\n', 3),
    ],
)
def test_a_rule_that_does_not_compile_names_file_and_line(tmp_path, text, line):
    path = tmp_path / "bad.yar"
    path.write_text(text)
    with pytest.raises(RuleError) as info:
        load_rules([str(tmp_path)])
    assert info.value.path == str(path) and info.value.line == line
    assert f"{path}:{line}" in str(info.value)


def test_a_missing_path_or_empty_directory_is_an_error(tmp_path):
    with pytest.raises(RuleError, match="no such file"):
        load_rules([str(tmp_path / "missing.yar")])
    with pytest.raises(RuleError, match="no \\*.yar"):
        load_rules([str(tmp_path)])


def test_yara_python_takes_a_module_yara_x_lacks_with_a_note(tmp_path):
    (tmp_path / "a.yar").write_text(RULE)
    (tmp_path / "py.yar").write_text(
        'import "tests"\nrule only_python { condition: tests.constants.one == 1 }\n'
    )
    rules = load_rules([str(tmp_path)])
    assert rules.engines[str(tmp_path / "py.yar")] == "yara-python"
    assert any("py.yar" in n and "yara-python" in n for n in rules.notes)
    assert {(h["rule"], h["engine"]) for h in rules.scan(b"hello")} == {
        ("implant", "yara-x"),
        ("only_python", "yara-python"),
    }


def test_yara_x_and_yara_python_agree(tmp_path):
    import yara

    (tmp_path / "a.yar").write_text(RULE)
    data = b"\x00" * 1000 + b"hello world, hello again" + bytes(range(256)) * 50 + b"hello w"
    ours = load_rules([str(tmp_path)]).scan(data)
    theirs = yara.compile(source=RULE).match(data=data)
    assert [h["rule"] for h in ours] == [m.rule for m in theirs]
    assert ours[0]["meta"] == theirs[0].meta and ours[0]["tags"] == theirs[0].tags
    mine = sorted((i, o, n) for i, o, n in ours[0]["strings"])
    ref = sorted((s.identifier, x.offset, x.matched_length) for s in theirs[0].strings for x in s.instances)
    assert mine == ref


def test_match_answers_like_yara_python(tmp_path):
    (tmp_path / "a.yar").write_text(RULE)
    (m,) = load_rules([str(tmp_path)]).match(data=b"--hello--")
    assert m.rule == "implant" and m.tags == ["evil"] and m.meta["mitre"] == "T1105"
    assert [(s.identifier, [(i.offset, i.matched_length) for i in s.instances]) for s in m.strings] == [
        ("$a", [(2, 5)])
    ]
