"""A container's OCI runtime spec and runtime options, from the protobuf Anys containerd keeps.

The spec Any (type ``types.containerd.io/opencontainers/runtime-spec/1/Spec``) holds the spec as
JSON (opencontainers/runtime-spec config.md, config-linux.md); it is read with the bounded,
type-checked loader, so a wrong type is a problem naming the field.  Runtime options are
protobuf messages: runc's ``containerd.runc.v1.Options`` (runtime/v2/runc/options/oci.proto)
and the v1 shim's ``containerd.linux.runc.RuncOptions`` (runtime/linux/runctypes/runc.proto).
"""

from __future__ import annotations

from pensieve.formats.protobuf_schema import BOOL, STRING, UINT32, Field, ProtobufError, decode
from pensieve.formats.untrusted_json import Doc, UntrustedJSONError, load
from pensieve.records.containerd import OciSpec, SpecNamespace
from pensieve.records.core import Problem
from pensieve.records.host import Mount

OPTION_SCHEMAS = {
    "containerd.runc.v1.Options": {
        1: Field("no_pivot_root", BOOL),
        2: Field("no_new_keyring", BOOL),
        3: Field("shim_cgroup", STRING),
        4: Field("io_uid", UINT32),
        5: Field("io_gid", UINT32),
        6: Field("binary_name", STRING),
        7: Field("root", STRING),
        8: Field("criu_path", STRING),
        9: Field("systemd_cgroup", BOOL),
        10: Field("criu_image_path", STRING),
        11: Field("criu_work_path", STRING),
    },
    "containerd.linux.runc.RuncOptions": {
        1: Field("runtime", STRING),
        2: Field("runtime_root", STRING),
        3: Field("criu_path", STRING),
        4: Field("systemd_cgroup", BOOL),
    },
}
CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


def runtime_options(type_url: str, value: bytes) -> dict:
    """The decoded fields of a known options message ({} for unknown types); ProtobufError when a
    known one does not decode."""
    name = type_url.rsplit("/", 1)[-1]
    if name not in OPTION_SCHEMAS:
        return {}
    out = decode(value, name, OPTION_SCHEMAS)
    out.pop("_unknown", None)
    return out


def _mount(doc: Doc) -> Mount:
    options = doc.list_of_str("options") or []
    return Mount(
        type=doc.str("type") or "bind",
        destination=doc.str("destination") or "",
        source=doc.str("source"),
        mode=",".join(options) or None,
        rw="ro" not in options,
    )


def _allows_every_device(linux: Doc) -> bool:
    for rule in linux.obj("resources").list_of_obj("devices"):
        whole = not any(k in rule for k in ("type", "major", "minor"))
        if whole and rule.bool("allow") and (rule.str("access") or "rwm") == "rwm":
            return True
    return False


def parse_spec(raw: bytes, type_url: str, source: str, problems: list[Problem], subject: str) -> OciSpec:
    """The spec JSON of one container; problems (named SOURCE, a bucket path) for what is wrong."""
    spec = OciSpec(type_url=type_url)
    try:
        doc = load(raw, source, problems, subject=subject)
    except UntrustedJSONError as exc:
        problems.append(Problem(source, f"spec unreadable: {exc}", subject))
        return spec
    process, linux = doc.obj("process"), doc.obj("linux")
    user, root = process.obj("user"), doc.obj("root")
    spec.version = doc.str("ociVersion")
    spec.args = process.list_of_str("args") or []
    spec.env = process.list_of_str("env") or []
    spec.cwd = process.str("cwd")
    spec.uid, spec.gid = user.int("uid"), user.int("gid")
    spec.terminal = process.bool("terminal")
    spec.no_new_privileges = process.bool("noNewPrivileges")
    spec.hostname = doc.str("hostname")
    spec.root_path, spec.root_readonly = root.str("path"), root.bool("readonly")
    spec.mounts = [_mount(m) for m in doc.list_of_obj("mounts")]
    spec.namespaces = [
        SpecNamespace(ns.str("type") or "", ns.str("path")) for ns in linux.list_of_obj("namespaces")
    ]
    caps = process.obj("capabilities")
    spec.capabilities = {name: got for name in CAPABILITY_SETS if (got := caps.list_of_str(name)) is not None}
    spec.masked_paths = linux.list_of_str("maskedPaths") or []
    spec.readonly_paths = linux.list_of_str("readonlyPaths") or []
    spec.cgroups_path = linux.str("cgroupsPath")
    spec.seccomp = bool(linux.obj("seccomp"))
    spec.annotations = doc.dict_of_str("annotations")
    spec.privileged = (
        "CAP_SYS_ADMIN" in spec.capabilities.get("bounding", [])
        and not spec.masked_paths
        and _allows_every_device(linux)
    )
    return spec


__all__ = ["OPTION_SCHEMAS", "ProtobufError", "parse_spec", "runtime_options"]
