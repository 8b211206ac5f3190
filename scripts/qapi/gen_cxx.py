"""C++ back ends: types with visitors and marshallers, commands, events."""

from __future__ import annotations

from typing import Optional

from .schema import (AlternateType, ArrayType, BuiltinType, Command, EnumType, Event,
                     Member, ObjectType, Schema, Type, c_name)

BANNER = """// Generated from the QAPI schema by scripts/qapi-gen.py; do not edit.
"""


def ns_open(ns: str) -> str:
    """Opens the namespace generated code lives in.  The daemon's schema
    generates into 'qapi', beside the runtime; another schema (the tests')
    generates into its own namespace and sees the runtime through using."""
    if ns == "qapi":
        return "namespace qapi {\n"
    return (f"namespace {ns} {{\nusing namespace ::qapi;\n"
            "using ::qapi::marshal;  // overloads for built-in types join ours\n")


def ns_close(ns: str) -> str:
    return f"}}  // namespace {ns}\n"


def cxx_type(t: Type) -> str:
    if isinstance(t, BuiltinType):
        return t.spec.cxx
    if isinstance(t, ArrayType):
        assert t.element is not None
        return f"std::vector<{cxx_type(t.element)}>"
    return t.c_name


def visit_fn(t: Type) -> str:
    """An expression naming the function that visits a value of type t."""
    if isinstance(t, BuiltinType):
        return f"qapi::visit_type_{t.name}"
    if isinstance(t, EnumType):
        return f"qapi::visit_enum<{t.c_name}>"
    if isinstance(t, ArrayType):
        assert t.element is not None
        elem = visit_fn(t.element)
        return (f"[](qapi::Input& in_, const char* n_, const qapi::Json& j_, "
                f"{cxx_type(t)}& o_) {{ qapi::visit_list(in_, n_, j_, o_, {elem}); }}")
    return f"visit_type_{t.c_name}"


def member_cxx_type(m: Member) -> str:
    assert m.type is not None
    base = cxx_type(m.type)
    return f"std::optional<{base}>" if m.optional else base


# ------------------------------------------------------------------ types

class TypesGen:
    def __init__(self, schema: Schema, ns: str = "qapi"):
        self.ns = ns
        self.schema = schema
        self.enums = [t for t in schema.types() if isinstance(t, EnumType)]
        self.objects = [t for t in schema.types()
                        if isinstance(t, (ObjectType, AlternateType))]

    # Definition order: a type is defined after every type it holds by value.
    def _order(self) -> list[Type]:
        done: set[str] = set()
        out: list[Type] = []

        def deps(t: Type) -> list[Type]:
            result: list[Type] = []
            if isinstance(t, ObjectType):
                if t.base is not None and not t.is_union():
                    result.append(t.base)
                for m in t.members:
                    if isinstance(m.type, (ObjectType, AlternateType)):
                        result.append(m.type)
                if t.variants:
                    result += [v.type for v in t.variants.variants if v.type is not None]
            elif isinstance(t, AlternateType):
                for v in t.variants.variants:
                    if isinstance(v.type, AlternateType):
                        result.append(v.type)
            return result

        def visit(t: Type, stack: tuple[str, ...]) -> None:
            if t.name in done:
                return
            if t.name in stack:
                raise RuntimeError(f"type cycle through {t.name}: needs a Box")
            for d in deps(t):
                visit(d, stack + (t.name,))
            done.add(t.name)
            out.append(t)

        for t in self.objects:
            visit(t, ())
        return out

    def header(self) -> str:
        o = [BANNER, "#pragma once\n",
             "#include <cstdint>\n#include <optional>\n#include <string>\n"
             "#include <variant>\n#include <vector>\n",
             '#include "qapi/visit.hpp"\n', ns_open(self.ns)]
        for e in self.enums:
            o.append(self._enum_decl(e))
        if self.ns != "qapi":
            # EnumTraits must be specialised in the runtime's namespace.
            o.append(ns_close(self.ns) + "namespace qapi {\n")
            for e in self.enums:
                o.append(self._enum_traits(f"::{self.ns}::{e.c_name}", [v.name for v in e.values]))
            o.append("}  // namespace qapi\n" + ns_open(self.ns))
        for t in self.objects:
            o.append(f"struct {t.c_name};\n")
        o.append("\n")
        for t in self._order():
            if isinstance(t, ObjectType):
                o.append(self._object_decl(t))
            else:
                o.append(self._alternate_decl(t))
        o.append("\n// Visitors and marshallers.\n")
        for t in self.objects:
            o.append(f"void visit_type_{t.c_name}(Input& in, const char* name, "
                     f"const Json& j, {t.c_name}& out);\n")
            if isinstance(t, ObjectType):
                o.append(f"void visit_members_{t.c_name}(Input& in, const Json& j, "
                         f"{t.c_name}& out);\n")
                o.append(f"void marshal_members(const {t.c_name}& v, Json& out);\n")
            o.append(f"Json marshal(const {t.c_name}& v);\n")
        o.append("\n" + ns_close(self.ns))
        return "".join(o)

    def _enum_traits(self, cname: str, names: list[str]) -> str:
        quoted = ", ".join(f'"{n}"' for n in names)
        return (f"template <>\nstruct EnumTraits<{cname}> {{\n"
                f"  static constexpr std::array<std::string_view, {len(names)}> names{{{quoted}}};\n"
                f"}};\n")

    def _enum_decl(self, e: EnumType) -> str:
        vals = ", ".join(v.c_name for v in e.values)
        decl = self._doc_comment(e) + f"enum class {e.c_name} {{ {vals} }};\n"
        if self.ns != "qapi":
            return decl + "\n"
        return decl + self._enum_traits(e.c_name, [v.name for v in e.values]) + "\n"

    def _doc_comment(self, t) -> str:
        if t.doc is None or not t.doc.body:
            return ""
        first = t.doc.body.strip().split("\n\n")[0].replace("\n", " ")
        return f"// {first}\n"

    def _object_decl(self, t: ObjectType) -> str:
        o = [self._doc_comment(t)]
        if t.is_union():
            assert t.variants and t.variants.tag_member
            tag = t.variants.tag_member
            assert isinstance(tag.type, EnumType)
            o.append(f"struct {t.c_name} {{\n")
            for m in t.members:
                if m is not tag:
                    o.append(f"  {member_cxx_type(m)} {m.c_name}{{}};\n")
            alts = self._union_alternatives(t)
            o.append(f"  std::variant<{', '.join(alts)}> u;\n\n")
            et = tag.type.c_name
            o.append(f"  // The discriminator '{tag.name}' is the index of the active branch.\n")
            o.append(f"  {et} {tag.c_name}() const {{ return static_cast<{et}>(u.index()); }}\n")
            o.append(f"  template <{et} K>\n  auto& get() {{ return std::get<static_cast<size_t>(K)>(u); }}\n")
            o.append(f"  template <{et} K>\n  const auto& get() const {{ return std::get<static_cast<size_t>(K)>(u); }}\n")
            o.append(f"  template <{et} K>\n  auto* get_if() {{ return std::get_if<static_cast<size_t>(K)>(&u); }}\n")
            o.append(f"  template <{et} K>\n  const auto* get_if() const {{ return std::get_if<static_cast<size_t>(K)>(&u); }}\n")
            o.append(f"  template <{et} K, class... A>\n  auto& emplace(A&&... a) {{ return u.template emplace<static_cast<size_t>(K)>(std::forward<A>(a)...); }}\n")
            o.append("};\n\n")
            return "".join(o)
        base = f" : {t.base.c_name}" if t.base is not None else ""
        o.append(f"struct {t.c_name}{base} {{\n")
        for m in t.local_members:
            o.append(f"  {member_cxx_type(m)} {m.c_name}{{}};\n")
        o.append("};\n\n")
        return "".join(o)

    def _union_alternatives(self, t: ObjectType) -> list[str]:
        assert t.variants and t.variants.tag_member
        tag_type = t.variants.tag_member.type
        assert isinstance(tag_type, EnumType)
        by_name = {v.name: v for v in t.variants.variants}
        alts = []
        for ev in tag_type.values:
            v = by_name.get(ev.name)
            alts.append(v.type.c_name if v is not None and v.type is not None
                        else "std::monostate")
        return alts

    def _alt_branch_cxx(self, t: Type) -> str:
        if isinstance(t, ObjectType):
            return f"Box<{t.c_name}>"
        return cxx_type(t)

    def _alternate_decl(self, t: AlternateType) -> str:
        o = [self._doc_comment(t), f"struct {t.c_name} {{\n"]
        names = [c_name(v.name) for v in t.variants.variants]
        o.append(f"  enum class Kind {{ {', '.join(names)} }};\n")
        alts = [self._alt_branch_cxx(v.type) for v in t.variants.variants]
        o.append(f"  std::variant<{', '.join(alts)}> u;\n")
        o.append("  Kind kind() const { return static_cast<Kind>(u.index()); }\n")
        o.append("};\n\n")
        return "".join(o)

    # -- implementation ----------------------------------------------------
    def source(self, header_name: str) -> str:
        o = [BANNER, f'#include "{header_name}"\n\n', ns_open(self.ns) + "\n"]
        for t in self.objects:
            if isinstance(t, ObjectType):
                o.append(self._object_impl(t))
            else:
                o.append(self._alternate_impl(t))
        o.append(ns_close(self.ns))
        return "".join(o)

    def _visit_member(self, m: Member, target: str) -> str:
        assert m.type is not None
        fn = visit_fn(m.type)
        if m.optional:
            return (f"  if (const Json* v = in.optional_member(j, \"{m.name}\")) {{\n"
                    f"    {fn}(in, \"{m.name}\", *v, {target}.{m.c_name}.emplace());\n"
                    f"  }}\n")
        return (f"  {fn}(in, \"{m.name}\", in.mandatory_member(j, \"{m.name}\"), "
                f"{target}.{m.c_name});\n")

    def _object_impl(self, t: ObjectType) -> str:
        o = []
        cn = t.c_name
        # visit_members: base first, then own members, then the branch.
        o.append(f"void visit_members_{cn}(Input& in, const Json& j, {cn}& out) {{\n")
        if t.is_union():
            assert t.variants and t.variants.tag_member
            tag = t.variants.tag_member
            assert isinstance(tag.type, EnumType)
            for m in t.members:
                if m is tag:
                    o.append(f"  {tag.type.c_name} tag{{}};\n")
                    o.append(f"  qapi::visit_enum(in, \"{m.name}\", "
                             f"in.mandatory_member(j, \"{m.name}\"), tag);\n")
                else:
                    o.append(self._visit_member(m, "out"))
            o.append("  switch (tag) {\n")
            by_name = {v.name: v for v in t.variants.variants}
            for ev in tag.type.values:
                v = by_name.get(ev.name)
                o.append(f"    case {tag.type.c_name}::{ev.c_name}:\n")
                if v is not None and v.type is not None:
                    o.append(f"      visit_members_{v.type.c_name}(in, j, "
                             f"out.emplace<{tag.type.c_name}::{ev.c_name}>());\n")
                else:
                    o.append(f"      out.emplace<{tag.type.c_name}::{ev.c_name}>();\n")
                o.append("      break;\n")
            o.append("  }\n")
        else:
            if t.base is not None:
                o.append(f"  visit_members_{t.base.c_name}(in, j, out);\n")
            for m in t.local_members:
                o.append(self._visit_member(m, "out"))
        if not t.members and not t.is_union():
            o.append("  (void)in;\n  (void)j;\n  (void)out;\n")
        o.append("}\n\n")
        o.append(f"void visit_type_{cn}(Input& in, const char* name, const Json& j, {cn}& out) {{\n"
                 f"  in.start_struct(name, j);\n"
                 f"  visit_members_{cn}(in, j, out);\n"
                 f"  in.end_struct(j);\n}}\n\n")
        # marshal
        o.append(f"void marshal_members(const {cn}& v, Json& out) {{\n")
        if t.is_union():
            assert t.variants and t.variants.tag_member
            tag = t.variants.tag_member
            for m in t.members:
                if m is tag:
                    o.append(f"  out[\"{m.name}\"] = marshal(v.{m.c_name}());\n")
                else:
                    o.append(self._marshal_member(m))
            o.append("  std::visit([&out](const auto& b) {\n"
                     "    if constexpr (!std::is_same_v<std::decay_t<decltype(b)>, std::monostate>) {\n"
                     "      marshal_members(b, out);\n    }\n  }, v.u);\n")
        else:
            if t.base is not None:
                o.append(f"  marshal_members(static_cast<const {t.base.c_name}&>(v), out);\n")
            for m in t.local_members:
                o.append(self._marshal_member(m))
            if not t.local_members and t.base is None:
                o.append("  (void)v;\n  (void)out;\n")
        o.append("}\n\n")
        o.append(f"Json marshal(const {cn}& v) {{\n  Json out = Json::object();\n"
                 f"  marshal_members(v, out);\n  return out;\n}}\n\n")
        return "".join(o)

    def _marshal_member(self, m: Member) -> str:
        if m.optional:
            return (f"  if (v.{m.c_name}) out[\"{m.name}\"] = marshal(*v.{m.c_name});\n")
        return f"  out[\"{m.name}\"] = marshal(v.{m.c_name});\n"

    def _alternate_impl(self, t: AlternateType) -> str:
        cn = t.c_name
        o = [f"void visit_type_{cn}(Input& in, const char* name, const Json& j, {cn}& out) {{\n"]
        # In keyval mode strings match every scalar; prefer a string branch
        # as QEMU's keyval visitor does.
        branches = list(enumerate(t.variants.variants))
        branches.sort(key=lambda iv: 0 if iv[1].type and iv[1].type.json_type == "string" else 1)
        for idx, v in branches:
            vt = v.type
            assert vt is not None
            kind = _json_kind(vt)
            o.append(f"  if (qapi::json_matches(in, j, qapi::JsonKind::{kind})) {{\n")
            if isinstance(vt, ObjectType):
                o.append(f"    auto& b = out.u.emplace<{idx}>();\n"
                         f"    visit_type_{vt.c_name}(in, name, j, b.emplace());\n")
            else:
                o.append(f"    {visit_fn(vt)}(in, name, j, out.u.emplace<{idx}>());\n")
            o.append("    return;\n  }\n")
        o.append(f"  in.fail_alternate(name, \"{t.name}\");\n}}\n\n")
        o.append(f"Json marshal(const {cn}& v) {{\n"
                 f"  return std::visit([](const auto& b) {{ return marshal(b); }}, v.u);\n}}\n\n")
        return "".join(o)


def _json_kind(t: Type) -> str:
    if isinstance(t, (ObjectType,)):
        return "object"
    if isinstance(t, ArrayType):
        return "array"
    if isinstance(t, EnumType):
        return "string"
    if isinstance(t, BuiltinType):
        return {"string": "string", "int": "integer", "number": "number",
                "boolean": "boolean", "null": "null", "value": "object"}[t.json_type]
    raise AssertionError(t)


# ------------------------------------------------------------------ commands

def _handler_params(cmd: Command) -> list[tuple[str, str]]:
    if cmd.arg_type is None:
        return []
    if cmd.boxed:
        return [(cmd.arg_type.c_name, "arg")]
    return [(member_cxx_type(m), m.c_name) for m in cmd.arg_type.members]


def _ret_cxx(cmd: Command) -> str:
    return cxx_type(cmd.ret_type) if cmd.ret_type is not None else "void"


class CommandsGen:
    def __init__(self, schema: Schema, ns: str = "qapi"):
        self.ns = ns
        self.schema = schema
        self.commands = schema.commands()

    def header(self, types_header: str) -> str:
        o = [BANNER, "#pragma once\n\n", f'#include "{types_header}"\n',
             '#include "qapi/dispatch.hpp"\n\n', ns_open(self.ns) + "\n",
             "// Command handlers.  Each is written by hand in the subsystem that\n"
             "// owns the command; the generated marshaller calls it with typed\n"
             "// arguments and turns its result into the reply.\n"]
        for cmd in self.commands:
            # The context parameter must not take an argument's name.
            args = _handler_params(cmd)
            ctx = "q_ctx" if any(n == "ctx" for _, n in args) else "ctx"
            params = [f"CommandContext& {ctx}"] + [f"{t} {n}" for t, n in args]
            if not cmd.gen:
                o.append(f"Json qmp_marshal_{c_name(cmd.name)}(CommandContext& ctx, const Json& args);\n")
                continue
            ret = _ret_cxx(cmd)
            if cmd.coroutine:
                ret = f"boost::asio::awaitable<{ret}>"
            o.append(f"{ret} qmp_{c_name(cmd.name)}({', '.join(params)});\n")
        o.append("\n// Every command in the schema, in schema order.\n"
                 "const std::vector<CommandDef>& qmp_command_table();\n\n"
                 + ns_close(self.ns))
        return "".join(o)

    def source(self, header: str) -> str:
        o = [BANNER, f'#include "{header}"\n\n', ns_open(self.ns) + "namespace {\n\n"]
        for cmd in self.commands:
            if cmd.gen:
                o.append(self._marshal(cmd))
        o.append("}  // namespace\n\nconst std::vector<CommandDef>& qmp_command_table() {\n"
                 "  static const std::vector<CommandDef> table{\n")
        for cmd in self.commands:
            cn = c_name(cmd.name)
            sync = "nullptr" if cmd.coroutine else f"&qmp_marshal_{cn}"
            coro = f"&qmp_marshal_{cn}" if cmd.coroutine else "nullptr"
            flags = []
            if cmd.allow_oob:
                flags.append("kAllowOob")
            if cmd.allow_preconfig:
                flags.append("kAllowPreconfig")
            if not cmd.success_response:
                flags.append("kNoSuccessResponse")
            if "deprecated" in cmd.feature_names():
                flags.append("kDeprecated")
            if "unstable" in cmd.feature_names():
                flags.append("kUnstable")
            flag_expr = " | ".join(f"CommandDef::{f}" for f in flags) or "0"
            o.append(f"      {{\"{cmd.name}\", {sync}, {coro}, {flag_expr}}},\n")
        o.append("  };\n  return table;\n}\n\n" + ns_close(self.ns))
        return "".join(o)

    def _marshal(self, cmd: Command) -> str:
        cn = c_name(cmd.name)
        o = []
        if cmd.coroutine:
            o.append(f"boost::asio::awaitable<Json> qmp_marshal_{cn}(CommandContext& ctx, Json args) {{\n")
        else:
            o.append(f"Json qmp_marshal_{cn}(CommandContext& ctx, const Json& args) {{\n")
        o.append("  Input in;\n")
        call_args = ["ctx"]
        if cmd.arg_type is not None:
            at = cmd.arg_type
            o.append(f"  {at.c_name} a;\n  visit_type_{at.c_name}(in, nullptr, args, a);\n")
            if cmd.boxed:
                call_args.append("std::move(a)")
            else:
                call_args += [f"std::move(a.{m.c_name})" for m in at.members]
        else:
            # No arguments: an empty object is all that is accepted.
            o.append("  in.start_struct(nullptr, args);\n  in.end_struct(args);\n")
        call = f"qmp_{cn}({', '.join(call_args)})"
        if cmd.coroutine:
            call = f"co_await {call}"
        ret = "co_return" if cmd.coroutine else "return"
        if cmd.ret_type is None:
            o.append(f"  {call};\n  {ret} Json::object();\n")
        else:
            o.append(f"  {ret} marshal({call});\n")
        o.append("}\n\n")
        return "".join(o)


# ------------------------------------------------------------------ events

class EventsGen:
    def __init__(self, schema: Schema, ns: str = "qapi"):
        self.ns = ns
        self.events = schema.events()

    def _params(self, ev: Event) -> list[tuple[str, str]]:
        if ev.arg_type is None:
            return []
        if ev.boxed:
            return [(f"const {ev.arg_type.c_name}&", "arg")]
        return [(member_cxx_type(m), m.c_name) for m in ev.arg_type.members]

    def header(self, types_header: str) -> str:
        o = [BANNER, "#pragma once\n\n", f'#include "{types_header}"\n',
             '#include "qapi/event.hpp"\n\n', ns_open(self.ns) + "\n",
             "// Typed event emitters: each builds the event's data and hands it to\n"
             "// the broadcaster installed with set_event_sink().\n"]
        for ev in self.events:
            params = ", ".join(f"{t} {n}" for t, n in self._params(ev))
            o.append(f"void qapi_event_send_{c_name(ev.name).lower()}({params});\n")
        o.append("\n" + ns_close(self.ns))
        return "".join(o)

    def source(self, header: str) -> str:
        o = [BANNER, f'#include "{header}"\n\n', ns_open(self.ns) + "\n"]
        for ev in self.events:
            params = ", ".join(f"{t} {n}" for t, n in self._params(ev))
            o.append(f"void qapi_event_send_{c_name(ev.name).lower()}({params}) {{\n")
            if ev.arg_type is None:
                o.append(f"  emit_event(\"{ev.name}\", std::nullopt);\n")
            elif ev.boxed:
                o.append(f"  emit_event(\"{ev.name}\", marshal(arg));\n")
            else:
                at = ev.arg_type
                # The parameters are named after the members: the local must
                # not take one's name ('q_' is reserved to the generator).
                data = "q_data" if any(m.c_name == "data" for m in at.members) else "data"
                o.append(f"  {at.c_name} {data};\n")
                for m in at.members:
                    o.append(f"  {data}.{m.c_name} = std::move({m.c_name});\n")
                o.append(f"  emit_event(\"{ev.name}\", marshal({data}));\n")
            o.append("}\n\n")
        o.append(ns_close(self.ns))
        return "".join(o)
