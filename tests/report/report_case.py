"""A case for the report tests: the real overlay2 fixture triaged (its analyses' findings, events
and links removed), plus synthetic findings,
events, links, logs and a container whose strings are hostile (markup, script, attribute breaks)."""

from __future__ import annotations

from pathlib import Path

from pensieve.case.store import CaseStore
from pensieve.case.triage import triage

#: what an attacker puts into names, paths and log lines; none of it may run or fetch anything
HOSTILE = (
    "<script>alert(1);window.__pwned=1</script>",
    '"><img src=x onerror="window.__pwned=1">',
    "</script><script>window.__pwned=1</script>",
    "' onmouseover='window.__pwned=1' x='",
    "<svg onload=window.__pwned=1>",
    "<img src=http://192.0.2.1/x.png>",
)
HOSTILE_NAME = HOSTILE[0] + HOSTILE[1]
HOSTILE_ID = 'evil"><img src=x onerror=window.__pwned=1>/../../x'
SEVERITIES = ("low", "critical", "info", "high", "medium", "high")
BASE_NS = 1_795_898_000_000_000_000


def _first_container(store: CaseStore) -> tuple[int, str, str]:
    _n, rows, _t = store.select("SELECT source_id, container_id, host FROM containers ORDER BY name LIMIT 1")
    return rows[0]


def make_case(evidence: Path, case: Path) -> Path:
    """CASE triaged from EVIDENCE (a Docker data root), then the synthetic rows added."""
    summary = triage([str(evidence)], str(case))
    assert summary.failed == 0
    store = CaseStore(str(case))
    try:
        # the tests count exactly the synthetic findings, events and links: the case analyses' own
        # rows (the real heuristics, timeline and links) are left out of this case
        for table in ("findings", "events", "links"):
            store.db.execute(f"DELETE FROM {table}")
        sid, cid, host = _first_container(store)
        keys = {"source_id": sid, "host": host, "engine": "docker"}
        store.insert(
            "containers",
            [
                {
                    **keys,
                    "container_id": HOSTILE_ID,
                    "name": HOSTILE_NAME,
                    "state": "running",
                    "image": HOSTILE[4],
                    "command": list(HOSTILE),
                    "risks": [HOSTILE[3]],
                    "working_dir": HOSTILE[1],
                    "created": BASE_NS,
                    "privileged": True,
                    "labels": {HOSTILE[0]: HOSTILE[1]},
                    "networks": {"bridge": {"ip": "172.17.0.9"}},
                    "mounts": [
                        {
                            "type": "bind",
                            "source": "/var/run/docker.sock",
                            "destination": HOSTILE[1],
                            "rw": True,
                        }
                    ],
                }
            ],
        )
        store.insert(
            "changes",
            [
                {
                    **keys,
                    "container_id": HOSTILE_ID,
                    "change": "added",
                    "path": "/tmp/" + h,
                    "type": "file",
                    "size": 1,
                    "sha256": "ab" * 32,
                }
                for h in HOSTILE
            ],
        )
        store.insert(
            "logs",
            [
                {**keys, "container_id": HOSTILE_ID, "time": BASE_NS + i, "stream": "stdout", "message": h}
                for i, h in enumerate(HOSTILE)
            ],
        )
        store.insert(
            "findings",
            [
                {
                    **keys,
                    "container_id": cid if i % 2 else HOSTILE_ID,
                    "finding_id": f"F{i}",
                    "producer": "synthetic",
                    "severity": sev,
                    "title": f"{sev} finding {i} {HOSTILE[i % len(HOSTILE)]}",
                    "rationale": HOSTILE[(i + 1) % len(HOSTILE)],
                    "techniques": ["T1611"],
                    "subject": HOSTILE[2],
                    "evidence": [{"table": "changes", "path": "/tmp/" + HOSTILE[1]}],
                    "details": {"x": HOSTILE[0]},
                    "time": BASE_NS + 10 * i,
                }
                for i, sev in enumerate(SEVERITIES)
            ],
        )
        kinds = ("lifecycle", "file", "log", "build")
        store.insert(
            "events",
            [
                {
                    **keys,
                    "container_id": HOSTILE_ID if i % 3 == 0 else cid,
                    "time": BASE_NS + i * 1_000_000_000,
                    "kind": kinds[i % len(kinds)],
                    "timestamp_desc": "synthetic",
                    "message": f"event {i} {HOSTILE[i % len(HOSTILE)]}",
                    "path": "/p/" + HOSTILE[(i + 2) % len(HOSTILE)],
                }
                for i in range(200)
            ],
        )
        store.insert(
            "links",
            [
                {
                    **keys,
                    "kind": "sha256",
                    "value": "cd" * 32,
                    "a_table": "changes",
                    "a": {"container_id": HOSTILE_ID},
                    "b_table": "changes",
                    "b": {"container_id": cid},
                },
                {
                    **keys,
                    "kind": "ip",
                    "value": "172.17.0.9",
                    "a_table": "sockets",
                    "a": {"container_id": cid},
                    "b_table": "containers",
                    "b": {"container_id": HOSTILE_ID},
                },
                {
                    **keys,
                    "kind": HOSTILE[0],
                    "value": HOSTILE[1],
                    "a_table": "x",
                    "a": {"container_id": HOSTILE_ID},
                    "b_table": "x",
                    "b": {"image_id": HOSTILE[2]},
                },
            ],
        )
    finally:
        store.close()
    return case
