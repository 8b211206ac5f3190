"""The query-qmp-schema data, in QEMU's SchemaInfo format (qapi/introspect.json).

Commands and events are listed in schema order, then every type they use,
in order of first use.  Type names other than built-ins are masked as
numbers ("0", "1", ...) so that clients probe commands and events, not
type names; integer types of every width appear as 'int'.
"""

from __future__ import annotations

import json
from typing import Any

from .schema import (AlternateType, ArrayType, BuiltinType, Command, EnumType, Event,
                     ObjectType, Schema, Type)


class IntrospectGen:
    def __init__(self, schema: Schema, unmask: bool = False):
        self.schema = schema
        self.unmask = unmask
        self.names: dict[str, str] = {}
        self.used: list[Type] = []
        self.trees: list[dict[str, Any]] = []
        self.empty = ObjectType("q_empty", None, None, [], None, [])

    def _name(self, name: str) -> str:
        if self.unmask:
            return name
        if name not in self.names:
            self.names[name] = str(len(self.names))
        return self.names[name]

    def _use(self, t: Type) -> str:
        if t.json_type == "int" and isinstance(t, BuiltinType):
            t = self.schema.lookup("int")  # type: ignore[assignment]
        elif isinstance(t, ArrayType) and t.element is not None and \
                isinstance(t.element, BuiltinType) and t.element.json_type == "int":
            t = self.schema.resolve_type("[int]", None, "")  # type: ignore[arg-type]
        if t not in self.used:
            self.used.append(t)
        if isinstance(t, BuiltinType):
            return t.name
        if isinstance(t, ArrayType):
            assert t.element is not None
            return "[" + self._use(t.element) + "]"
        return self._name(t.name)

    @staticmethod
    def _features(features) -> list[str]:
        return [f.name for f in features]

    def _tree(self, name: str, meta: str, obj: dict[str, Any], features=()) -> None:
        if meta not in ("command", "event", "builtin", "array"):
            name = self._name(name)
        out: dict[str, Any] = {"name": name, "meta-type": meta}
        out.update(obj)
        if features:
            out["features"] = self._features(features)
        self.trees.append(out)

    def _member(self, m) -> dict[str, Any]:
        obj: dict[str, Any] = {"name": m.name, "type": self._use(m.type)}
        if m.optional:
            obj["default"] = None
        if m.features:
            obj["features"] = self._features(m.features)
        return obj

    def build(self) -> list[dict[str, Any]]:
        for ent in self.schema.order:
            if isinstance(ent, Command):
                arg = ent.arg_type or self.empty
                ret = ent.ret_type or self.empty
                obj: dict[str, Any] = {"arg-type": self._use(arg), "ret-type": self._use(ret)}
                if ent.allow_oob:
                    obj["allow-oob"] = True
                self._tree(ent.name, "command", obj, ent.features)
            elif isinstance(ent, Event):
                self._tree(ent.name, "event",
                           {"arg-type": self._use(ent.arg_type or self.empty)}, ent.features)
        i = 0
        while i < len(self.used):
            self._type(self.used[i])
            i += 1
        return self.trees

    def _type(self, t: Type) -> None:
        if isinstance(t, BuiltinType):
            self._tree(t.name, "builtin", {"json-type": t.json_type})
        elif isinstance(t, EnumType):
            members = []
            for v in t.values:
                m: dict[str, Any] = {"name": v.name}
                if v.features:
                    m["features"] = self._features(v.features)
                members.append(m)
            self._tree(t.name, "enum", {"members": members,
                                        "values": [v.name for v in t.values]}, t.features)
        elif isinstance(t, ArrayType):
            assert t.element is not None
            elem = self._use(t.element)
            self._tree("[" + elem + "]", "array", {"element-type": elem})
        elif isinstance(t, ObjectType):
            obj: dict[str, Any] = {"members": [self._member(m) for m in t.members]}
            if t.variants is not None:
                assert t.variants.tag_member is not None
                obj["tag"] = t.variants.tag_member.name
                obj["variants"] = [{"case": v.name, "type": self._use(v.type)}
                                   for v in t.variants.variants if v.type is not None]
                # Tag values without a branch add no members: QEMU lists them
                # with the empty object type, after the declared branches.
                declared = {v.name for v in t.variants.variants}
                tag_type = t.variants.tag_member.type
                obj["variants"] += [{"case": ev.name, "type": self._use(self.empty)}
                                    for ev in tag_type.values if ev.name not in declared]
            self._tree(t.name, "object", obj, t.features)
        elif isinstance(t, AlternateType):
            self._tree(t.name, "alternate",
                       {"members": [{"type": self._use(v.type)}
                                    for v in t.variants.variants if v.type is not None]},
                       t.features)


def gen_introspect_cpp(schema: Schema, ns: str = "qapi") -> str:
    trees = IntrospectGen(schema).build()
    text = json.dumps(trees, separators=(",", ":"))
    # Split the literal into pieces: compilers limit one string literal's length.
    pieces = [text[i:i + 8000] for i in range(0, len(text), 8000)]
    lits = "\n".join(f'R"qapi({p})qapi"' for p in pieces)
    return ("// Generated from the QAPI schema by scripts/qapi-gen.py; do not edit.\n"
            '#include "qapi/introspect.hpp"\n\n'
            f"namespace {ns} {{\n\n"
            "const qapi::Json& qmp_schema_introspection() {\n"
            f"  static const qapi::Json schema = qapi::Json::parse(std::string_view(\n{lits}));\n"
            f"  return schema;\n}}\n\n}}  // namespace {ns}\n")
