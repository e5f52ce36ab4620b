"""pensieve.records.core: the cheap stand-in for @dataclass(slots=True) that records use."""

from __future__ import annotations

import pytest

from pensieve.records import Container, to_dict
from pensieve.records.core import field, fields, is_record, record


@record
class Sample:
    name: str
    size: int = 0
    tags: list[str] = field(default_factory=list)

    @property
    def big(self) -> bool:
        return self.size > 10


def test_init_defaults_and_factories_are_fresh():
    a, b = Sample("a"), Sample("b", 20, ["x"])
    a.tags.append("t")
    assert Sample("c").tags == [] and a.tags == ["t"]
    assert (b.name, b.size, b.tags, b.big) == ("b", 20, ["x"], True)
    assert Sample(name="d", tags=["y"]).tags == ["y"]
    with pytest.raises(TypeError):
        Sample()  # name is required


def test_slots_equality_repr_and_fields():
    s = Sample("a", 1)
    with pytest.raises(AttributeError):
        s.unknown = 1
    assert s == Sample("a", 1) and s != Sample("a", 2) and s != ("a", 1)
    assert repr(s) == "Sample(name='a', size=1, tags=[])"
    assert fields(Sample) == ("name", "size", "tags") and is_record(s) and not is_record(1)
    with pytest.raises(TypeError):
        hash(s)


def test_records_serialise():
    c = Container(id="x", engine="docker", labels={"a": "b"})
    d = to_dict(c)
    assert d["id"] == "x" and d["labels"] == {"a": "b"} and d["mounts"] == []
    assert list(d) == list(fields(Container))
