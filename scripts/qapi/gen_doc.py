"""The QMP reference in Markdown, from the schema's doc comments."""

from __future__ import annotations

import os

from .schema import (AlternateType, Command, EnumType, Event, ObjectType, Schema, Type)


def _type_ref(t: Type) -> str:
    name = t.name
    if name.startswith("q_obj_"):
        return "object"
    if name.endswith("List") and hasattr(t, "element") and t.element is not None:
        return f"[{_type_ref(t.element)}]"
    return f"`{name}`"


def _members_table(members, doc, skip=()) -> list[str]:
    rows = []
    for m in members:
        if m.name in skip:
            continue
        desc = (doc.args.get(m.name, "") if doc else "").replace("\n", " ")
        opt = " (optional)" if m.optional else ""
        rows.append(f"| `{m.name}` | {_type_ref(m.type)}{opt} | {desc} |")
    if not rows:
        return []
    return ["| member | type | description |", "| --- | --- | --- |"] + rows + [""]


def gen_doc(schema: Schema) -> str:
    out = ["# QMP reference", "",
           "Generated from the QAPI schema under `qapi/` by `scripts/qapi-gen.py`;",
           "do not edit: change the schema's doc comments instead.", ""]
    module = None
    for ent in schema.order:
        if ent.info is None or ent.is_implicit() or ent.doc is None:
            continue
        mod = os.path.basename(ent.info.fname)
        if mod != module:
            module = mod
            out += [f"## {mod}", ""]
        out += [f"### {ent.name} ({ent.meta})", ""]
        if ent.doc.body:
            out += [ent.doc.body, ""]
        if isinstance(ent, EnumType):
            out += ["| value | description |", "| --- | --- |"]
            for v in ent.values:
                out.append(f"| `{v.name}` | {ent.doc.args.get(v.name, '').replace(chr(10), ' ')} |")
            out.append("")
        elif isinstance(ent, ObjectType):
            if ent.base is not None and not ent.base.is_implicit():
                out += [f"Base: `{ent.base.name}`", ""]
                out += _members_table(ent.local_members, ent.doc)
            else:
                out += _members_table(ent.members, ent.doc)
            if ent.variants:
                out += [f"Discriminator: `{ent.variants.tag_name}`", ""]
                for v in ent.variants.variants:
                    out.append(f"- `{v.name}`: {_type_ref(v.type)}")
                out.append("")
        elif isinstance(ent, AlternateType):
            for v in ent.variants.variants:
                desc = ent.doc.args.get(v.name, "").replace("\n", " ")
                out.append(f"- `{v.name}`: {_type_ref(v.type)} {desc}".rstrip())
            out.append("")
        elif isinstance(ent, (Command, Event)):
            if ent.arg_type is not None:
                if ent.boxed or not ent.arg_type.is_implicit():
                    out += [f"Arguments: the members of `{ent.arg_type.name}`", ""]
                else:
                    out += _members_table(ent.arg_type.members, ent.doc)
            if isinstance(ent, Command):
                flags = [f for f, on in (("allow-oob", ent.allow_oob),
                                         ("allow-preconfig", ent.allow_preconfig),
                                         ("coroutine", ent.coroutine)) if on]
                if flags:
                    out += ["Flags: " + ", ".join(f"`{f}`" for f in flags), ""]
        if ent.features:
            out += ["Features:", ""]
            for f in ent.features:
                out.append(f"- `{f.name}`: {ent.doc.features.get(f.name, '').replace(chr(10), ' ')}")
            out.append("")
        for sec in ent.doc.sections:
            if sec.name.startswith("Example"):
                out += [f"{sec.name}:", "", "```", sec.text.strip("\n"), "```", ""]
            else:
                out += [f"{sec.name}: {sec.text.strip()}", ""]
    return "\n".join(out).rstrip("\n") + "\n"
