"""``compare``: one image on two sources (host vs archive, two archives, two hosts)."""

from __future__ import annotations

import sys

from pensieve.commands.common import Commands, UsageError, arg, err, full_ids, open_host, short
from pensieve.output import columns

COMMANDS = Commands()
command = COMMANDS.command
add_parser = COMMANDS.add_parser


@command(
    "compare",
    "an image on two sources (host vs archive, two archives, two hosts): differing layers and files",
    arg("source_a", metavar="A", help="host root, data root or image archive"),
    arg("source_b", metavar="B", help="host root, data root or image archive"),
    arg(
        "--image",
        dest="image_a",
        metavar="REF_A",
        help="the image in A (default: every image of A found in B)",
    ),
    arg(
        "--image-b",
        dest="image_b",
        metavar="REF_B",
        help="the image in B (default: REF_A's id, else its tags)",
    ),
    arg("--path", dest="top", default="/", help="compare only this subtree (default /)"),
    arg("--layers", dest="layers_only", action="store_true", help="layers only, no file walk"),
    arg("--no-hash", action="store_true", help="skip content hashes (content-only changes go unseen)"),
)
def cmd_compare(o):
    """Match images of A and B (by id, else by tag, or as named), list their layers by diff id
    (shared, only in A, only in B) and every file that differs between the two merged trees:
    added (only in B), deleted (only in A) or changed (content sha256, size, mode, owner, link
    target, type, xattrs, mtime), each side with the layer that provides it."""
    from pensieve.engines.docker import LookupFailed
    from pensieve.images.compare import compare_images, match_images
    from pensieve.output.render import dumps, emit

    host_a, host_b = open_host(o.source_a), open_host(o.source_b)
    rest_a: list = []
    rest_b: list = []
    if o.image_a:
        ia = host_a.image(o.image_a)
        if o.image_b:
            pairs = [(ia, host_b.image(o.image_b), "given")]
        else:
            by_id = [i for i in host_b.images() if i.id == ia.id]
            by_tag = [i for i in host_b.images() if set(i.tags) & set(ia.tags)]
            if not by_id and not by_tag:
                raise LookupFailed(
                    f"image {o.image_a!r} of A is not in B by id or tag: name it with --image-b"
                )
            pairs = [(ia, (by_id or by_tag)[0], "id" if by_id else "tag")]
    elif o.image_b:
        raise UsageError("--image-b needs --image")
    else:
        pairs, rest_a, rest_b = match_images(host_a, host_b)
        if not pairs:
            raise LookupFailed("no image of A is in B by id or tag: name them with --image and --image-b")
    results = [
        compare_images(
            host_a, a, host_b, b, how, hash_files=not o.no_hash, top=o.top, files=not o.layers_only
        )
        for a, b, how in pairs
    ]
    problems = list(host_a.problems) + list(host_b.problems) + [p for c in results for p in c.problems]
    if o.fmt == "json":
        doc = {
            "a": results[0].source_a,
            "b": results[0].source_b,
            "comparisons": results,
            "only_in_a": [{"id": i.id, "tags": i.tags} for i in rest_a if i.tags],
            "only_in_b": [{"id": i.id, "tags": i.tags} for i in rest_b if i.tags],
        }
        sys.stdout.write(dumps(doc) + "\n")
        return problems
    if o.fmt in ("jsonl", "csv"):
        rows = (
            {
                "image_a": c.image_a,
                "image_b": c.image_b,
                "change": f.change,
                "path": f.path,
                "what": ",".join(f.what),
                "type_a": f.type_a,
                "type_b": f.type_b,
                "sha256_a": (f.a or {}).get("sha256"),
                "sha256_b": (f.b or {}).get("sha256"),
                "layer_a": (f.a or {}).get("diff_id"),
                "layer_b": (f.b or {}).get("diff_id"),
                "a": f.a,
                "b": f.b,
            }
            for c in results
            for f in c.files
        )
        emit(rows, o.fmt)
        return problems
    for c in results:
        name_a = c.tags_a[0] if c.tags_a else short(c.image_a)
        name_b = c.tags_b[0] if c.tags_b else short(c.image_b)
        shared = sum(m.status == "shared" for m in c.layers)
        emit(
            c.layers,
            "table",
            columns.layer_matches(full_ids(o)),
            title=(
                f"A {name_a} ({short(c.image_a)}) vs B {name_b} ({short(c.image_b)}), matched by "
                f"{c.matched_by}{', same image id' if c.same_id else ''}: {shared} shared layers"
            ),
        )
        if not o.layers_only:
            emit(
                c.files,
                "table",
                columns.file_differences(full_ids(o)),
                title=f"{len(c.files)} entries differ" + (f" under {o.top}" if o.top != "/" else ""),
            )
    for label, rest in (("A", rest_a), ("B", rest_b)):
        tagged = [i for i in rest if i.tags]
        if tagged:
            err(f"only in {label}: " + ", ".join(i.tags[0] for i in tagged), "33")
    return problems
