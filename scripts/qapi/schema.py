"""The semantic model of a QAPI schema.

Stages: the parser gives expressions; check_expr() checks each one's shape;
Schema builds entities (types, commands, events), resolves names, desugars
simple unions and implicit types, and detects clashes.  Back ends only read
the finished model.

'if' conditions are evaluated here against the configuration symbols the
build defines: a definition, member, branch or enum value whose condition is
false does not exist for the back ends, exactly as if QEMU's generated #if
had compiled it out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from .parser import Doc, Expr, QAPIError, SourceInfo

# ---------------------------------------------------------------- naming

CXX_KEYWORDS = {
    "alignas", "alignof", "and", "and_eq", "asm", "auto", "bitand", "bitor", "bool",
    "break", "case", "catch", "char", "char8_t", "char16_t", "char32_t", "class",
    "compl", "concept", "const", "consteval", "constexpr", "constinit", "const_cast",
    "continue", "co_await", "co_return", "co_yield", "decltype", "default", "delete",
    "do", "double", "dynamic_cast", "else", "enum", "explicit", "export", "extern",
    "false", "float", "for", "friend", "goto", "if", "inline", "int", "long",
    "mutable", "namespace", "new", "noexcept", "not", "not_eq", "nullptr", "operator",
    "or", "or_eq", "private", "protected", "public", "register", "reinterpret_cast",
    "requires", "return", "short", "signed", "sizeof", "static", "static_assert",
    "static_cast", "struct", "switch", "template", "this", "thread_local", "throw",
    "true", "try", "typedef", "typeid", "typename", "union", "unsigned", "using",
    "virtual", "void", "volatile", "wchar_t", "while", "xor", "xor_eq",
    # Macros that glibc or the compiler may define in GNU modes.
    "unix", "linux", "i386", "errno", "stdin", "stdout", "stderr", "major", "minor",
}


def c_name(name: str) -> str:
    """The one mechanical rule from a wire name to a C++ identifier.

    '-' and '.' become '_'; a C++ keyword (or a macro glibc may define) or a
    leading digit gets the reserved prefix 'q_', as QAPI does for C.
    """
    out = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if out in CXX_KEYWORDS or out[:1].isdigit():
        out = "q_" + out
    return out


# ---------------------------------------------------------------- conditions

class IfCond:
    """An 'if' condition: a symbol, or all/any/not of conditions."""

    def __init__(self, raw: Any, info: SourceInfo):
        self.raw = raw
        _check_if(raw, info)

    def evaluate(self, defined: set[str]) -> bool:
        return _eval_if(self.raw, defined)


def _check_if(raw: Any, info: SourceInfo) -> None:
    if isinstance(raw, str):
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", raw):
            raise QAPIError(info, f"'if' condition '{raw}' is not a valid identifier")
        return
    if isinstance(raw, dict) and len(raw) == 1:
        (op, arg), = raw.items()
        if op == "not":
            _check_if(arg, info)
            return
        if op in ("all", "any"):
            if not isinstance(arg, list) or not arg:
                raise QAPIError(info, f"'if' condition '{op}' needs a non-empty list")
            for a in arg:
                _check_if(a, info)
            return
        raise QAPIError(info, f"'if' condition has unknown operator '{op}'")
    raise QAPIError(info, "'if' condition must be a string or an object with one of 'all', 'any', 'not'")


def _eval_if(raw: Any, defined: set[str]) -> bool:
    if raw is None:
        return True
    if isinstance(raw, str):
        return raw in defined
    (op, arg), = raw.items()
    if op == "not":
        return not _eval_if(arg, defined)
    if op == "all":
        return all(_eval_if(a, defined) for a in arg)
    return any(_eval_if(a, defined) for a in arg)


# ---------------------------------------------------------------- entities

@dataclass
class Feature:
    name: str
    info: SourceInfo

    @property
    def is_special(self) -> bool:
        return self.name in ("deprecated", "unstable")


class Entity:
    meta = "entity"

    def __init__(self, name: str, info: Optional[SourceInfo], doc: Optional[Doc] = None,
                 features: Optional[list[Feature]] = None):
        self.name = name
        self.info = info
        self.doc = doc
        self.features = features or []
        self.module: Optional[str] = info.fname if info else None

    @property
    def c_name(self) -> str:
        return c_name(self.name)

    def is_implicit(self) -> bool:
        return self.info is None or self.name.startswith("q_")

    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


class Type(Entity):
    meta = "type"
    json_type = "object"

    def cxx_type(self) -> str:
        return self.c_name

    def visit_fn(self) -> str:
        return f"visit_type_{self.c_name}"

    def marshal_fn(self) -> str:
        return f"marshal_{self.c_name}"

    def is_object_like(self) -> bool:
        return False


@dataclass
class BuiltinSpec:
    cxx: str
    json: str
    kind: str  # scalar family for the runtime visitors


BUILTINS: dict[str, BuiltinSpec] = {
    "str": BuiltinSpec("std::string", "string", "str"),
    "number": BuiltinSpec("double", "number", "number"),
    "int": BuiltinSpec("int64_t", "int", "int"),
    "int8": BuiltinSpec("int8_t", "int", "int"),
    "int16": BuiltinSpec("int16_t", "int", "int"),
    "int32": BuiltinSpec("int32_t", "int", "int"),
    "int64": BuiltinSpec("int64_t", "int", "int"),
    "uint8": BuiltinSpec("uint8_t", "int", "uint"),
    "uint16": BuiltinSpec("uint16_t", "int", "uint"),
    "uint32": BuiltinSpec("uint32_t", "int", "uint"),
    "uint64": BuiltinSpec("uint64_t", "int", "uint"),
    "size": BuiltinSpec("uint64_t", "int", "size"),
    "bool": BuiltinSpec("bool", "boolean", "bool"),
    "any": BuiltinSpec("qapi::Json", "value", "any"),
    "null": BuiltinSpec("qapi::Null", "null", "null"),
}


class BuiltinType(Type):
    meta = "built-in"

    def __init__(self, name: str, spec: BuiltinSpec):
        super().__init__(name, None)
        self.spec = spec
        self.json_type = spec.json

    def cxx_type(self) -> str:
        return self.spec.cxx

    def visit_fn(self) -> str:
        return f"qapi::visit_type_{self.name}"

    def marshal_fn(self) -> str:
        return f"qapi::marshal_{self.name}"

    def is_implicit(self) -> bool:
        return False


@dataclass
class EnumValue:
    name: str
    info: SourceInfo
    features: list[Feature] = field(default_factory=list)

    @property
    def c_name(self) -> str:
        return c_name(self.name)


class EnumType(Type):
    meta = "enum"
    json_type = "string"

    def __init__(self, name, info, doc, features, values: list[EnumValue], prefix=None):
        super().__init__(name, info, doc, features)
        self.values = values
        self.prefix = prefix


class ArrayType(Type):
    meta = "array"
    json_type = "array"

    def __init__(self, element_name: str, info: Optional[SourceInfo]):
        super().__init__(f"{element_name}List", info)
        self.element_name = element_name
        self.element: Optional[Type] = None

    def cxx_type(self) -> str:
        assert self.element is not None
        return f"std::vector<{self.element.cxx_type()}>"

    def is_implicit(self) -> bool:
        return True

    @property
    def c_name(self) -> str:
        assert self.element is not None
        return self.element.c_name + "List"


@dataclass
class Member:
    name: str
    type_name: str
    optional: bool
    info: SourceInfo
    features: list[Feature] = field(default_factory=list)
    type: Optional[Type] = None
    owner: Optional["ObjectType"] = None

    @property
    def c_name(self) -> str:
        return c_name(self.name)


@dataclass
class Variant:
    name: str
    type_name: str
    info: SourceInfo
    type: Optional[Type] = None

    @property
    def c_name(self) -> str:
        return c_name(self.name)


@dataclass
class Variants:
    tag_name: Optional[str]  # None for alternates
    variants: list[Variant]
    tag_member: Optional[Member] = None


class ObjectType(Type):
    meta = "struct"

    def __init__(self, name, info, doc, features, base_name: Optional[str],
                 local_members: list[Member], variants: Optional[Variants] = None,
                 meta: str = "struct"):
        super().__init__(name, info, doc, features)
        self.meta = meta
        self.base_name = base_name
        self.base: Optional[ObjectType] = None
        self.local_members = local_members
        self.variants = variants
        self.members: list[Member] = []  # base members first, then local
        self.checked = False

    def is_object_like(self) -> bool:
        return True

    def is_union(self) -> bool:
        return self.variants is not None

    def is_empty(self) -> bool:
        return not self.members and not self.variants


class AlternateType(Type):
    meta = "alternate"
    json_type = "value"

    def __init__(self, name, info, doc, features, variants: Variants):
        super().__init__(name, info, doc, features)
        self.variants = variants


class Command(Entity):
    meta = "command"

    def __init__(self, name, info, doc, features, arg_name, arg_type: Optional[ObjectType],
                 ret_name: Optional[str], gen: bool, success_response: bool, boxed: bool,
                 allow_oob: bool, allow_preconfig: bool, coroutine: bool):
        super().__init__(name, info, doc, features)
        self.arg_name = arg_name
        self.arg_type = arg_type
        self.ret_name = ret_name
        self.ret_type: Optional[Type] = None
        self.gen = gen
        self.success_response = success_response
        self.boxed = boxed
        self.allow_oob = allow_oob
        self.allow_preconfig = allow_preconfig
        self.coroutine = coroutine


class Event(Entity):
    meta = "event"

    def __init__(self, name, info, doc, features, arg_name, arg_type: Optional[ObjectType],
                 boxed: bool):
        super().__init__(name, info, doc, features)
        self.arg_name = arg_name
        self.arg_type = arg_type
        self.boxed = boxed


# ---------------------------------------------------------------- shape checks

KEYS = {
    "enum": ({"enum", "data"}, {"if", "features", "prefix"}),
    "struct": ({"struct", "data"}, {"base", "if", "features"}),
    "union": ({"union", "data"}, {"base", "discriminator", "if", "features"}),
    "alternate": ({"alternate", "data"}, {"if", "features"}),
    "command": ({"command"}, {"data", "returns", "boxed", "if", "features", "gen",
                              "success-response", "allow-oob", "allow-preconfig",
                              "coroutine"}),
    "event": ({"event"}, {"data", "boxed", "if", "features"}),
}

TYPE_NAME_RE = re.compile(r"^(x-)?[A-Z][A-Za-z0-9]*$|^q_obj_.*$")
LOWER_NAME_RE = re.compile(r"^(x-)?[a-z][a-z0-9-]*$")
EVENT_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
MEMBER_NAME_RE = re.compile(r"^(x-)?[a-z][a-z0-9_-]*$", re.I)


def _meta_of(expr: dict[str, Any], info: SourceInfo) -> str:
    for meta in KEYS:
        if meta in expr:
            return meta
    raise QAPIError(info, "expression is missing metatype")


def check_keys(expr: dict[str, Any], info: SourceInfo, meta: str) -> None:
    required, optional = KEYS[meta]
    for key in sorted(required - set(expr)):
        raise QAPIError(info, f"key '{key}' is missing")
    for key in expr:
        if key not in required and key not in optional:
            raise QAPIError(info, f"key '{key}' is unexpected; expected one of "
                            + ", ".join(f"'{k}'" for k in sorted(required | optional)))
    for key in ("gen", "success-response", "boxed", "allow-oob", "allow-preconfig",
                "coroutine"):
        if key not in expr:
            continue
        if not isinstance(expr[key], bool):
            raise QAPIError(info, f"flag '{key}' must be 'true' or 'false'")
        if key in ("gen", "success-response") and expr[key]:
            raise QAPIError(info, f"flag '{key}' may only use false value")
        if key not in ("gen", "success-response") and not expr[key]:
            raise QAPIError(info, f"flag '{key}' may only use true value")


class Schema:
    def __init__(self, exprs: list[Expr], pragma: dict[str, Any], defined: set[str]):
        self.defined = defined
        self.pragma = pragma
        self.entities: dict[str, Entity] = {}
        self.order: list[Entity] = []
        self.arrays: dict[str, ArrayType] = {}
        for name, spec in BUILTINS.items():
            self._define(BuiltinType(name, spec), None)
        self._define(EnumType("QType", None, None, [], [
            EnumValue(v, None) for v in
            ("none", "qnull", "qnum", "qstring", "qdict", "qlist", "qbool")]), None)
        for e in exprs:
            self._define_expr(e)
        self._resolve()

    # -- definition -------------------------------------------------------
    def lookup(self, name: str) -> Optional[Entity]:
        return self.entities.get(name)

    def _define(self, ent: Entity, info: Optional[SourceInfo]) -> None:
        if ent.name in self.entities:
            other = self.entities[ent.name]
            where = f" at {other.info.fname}:{other.info.line}" if other.info else ""
            raise QAPIError(info, f"{ent.meta} '{ent.name}' is already defined{where}"
                            if other.meta == ent.meta else
                            f"'{ent.name}' is already defined as {other.meta}{where}")
        self.entities[ent.name] = ent
        self.order.append(ent)

    def _enabled(self, raw: Any, info: SourceInfo) -> bool:
        if raw is None:
            return True
        return IfCond(raw, info).evaluate(self.defined)

    def _features(self, raw: Any, info: SourceInfo) -> list[Feature]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise QAPIError(info, "'features' must be an array")
        out = []
        for f in raw:
            if isinstance(f, str):
                name, cond = f, None
            elif isinstance(f, dict) and isinstance(f.get("name"), str):
                if set(f) - {"name", "if"}:
                    raise QAPIError(info, "feature has unexpected keys")
                name, cond = f["name"], f.get("if")
            else:
                raise QAPIError(info, "'features' members must be strings or objects with 'name'")
            if not LOWER_NAME_RE.match(name):
                raise QAPIError(info, f"feature '{name}' has an invalid name")
            if any(o.name == name for o in out):
                raise QAPIError(info, f"feature '{name}' is defined twice")
            if self._enabled(cond, info):
                out.append(Feature(name, info))
        return out

    def _type_ref(self, raw: Any, info: SourceInfo, what: str,
                  allow_array: bool = True, allow_inline: bool = False) -> Any:
        if isinstance(raw, str):
            return raw
        if isinstance(raw, list):
            if not allow_array:
                raise QAPIError(info, f"{what} cannot be an array")
            if len(raw) != 1 or not isinstance(raw[0], str):
                raise QAPIError(info, f"{what}: array type must contain single type name")
            return raw
        if allow_inline and isinstance(raw, dict):
            return raw
        raise QAPIError(info, f"{what} should be a type name")

    def _members(self, raw: Any, info: SourceInfo, what: str = "'data'") -> list[Member]:
        if not isinstance(raw, dict):
            raise QAPIError(info, f"{what} must be an object")
        out: list[Member] = []
        for key, val in raw.items():
            optional = key.startswith("*")
            name = key[1:] if optional else key
            feats: list[Feature] = []
            if isinstance(val, dict):
                if "type" not in val:
                    raise QAPIError(info, f"member '{name}': key 'type' is missing")
                if set(val) - {"type", "if", "features"}:
                    raise QAPIError(info, f"member '{name}' has unexpected keys")
                if not self._enabled(val.get("if"), info):
                    continue
                feats = self._features(val.get("features"), info)
                val = val["type"]
            if not MEMBER_NAME_RE.match(name) and not name.startswith("q_"):
                raise QAPIError(info, f"member '{name}' has an invalid name")
            if name.startswith("has_") or name.startswith("has-"):
                raise QAPIError(info, f"member '{name}' uses reserved name")
            tref = self._type_ref(val, info, f"member '{name}'")
            out.append(Member(name, tref if isinstance(tref, str) else f"[{tref[0]}]",
                              optional, info, feats))
        return out

    def _implicit_object(self, name: str, raw: Any, info: SourceInfo) -> str:
        obj = ObjectType(name, info, None, [], None, self._members(raw, info))
        self._define(obj, info)
        return name

    def _define_expr(self, e: Expr) -> None:
        expr, info, doc = e.expr, e.info, e.doc
        meta = _meta_of(expr, info)
        name = expr[meta]
        if not isinstance(name, str):
            raise QAPIError(info, f"'{meta}' requires a string name")
        info.set_defn(meta, name)
        check_keys(expr, info, meta)
        if doc is not None and doc.symbol is not None and doc.symbol != name:
            raise QAPIError(info, f"documentation comment is for '{doc.symbol}'")
        if not self._enabled(expr.get("if"), info):
            return
        if name.startswith("q_") or name.lower().startswith("q-"):
            raise QAPIError(info, f"{meta} name '{name}' uses reserved prefix")
        feats = self._features(expr.get("features"), info)
        if meta in ("enum", "struct", "union", "alternate"):
            if not TYPE_NAME_RE.match(name):
                raise QAPIError(info, f"name of {meta} '{name}' should use CamelCase")
            if name.endswith("List") or name.endswith("Kind"):
                raise QAPIError(info, f"{meta} name '{name}' should not end in '"
                                + name[-4:] + "'")
        elif meta == "command":
            if not LOWER_NAME_RE.match(name) and \
                    name not in self.pragma.get("command-name-exceptions", []):
                raise QAPIError(info, f"name of command '{name}' should be lower-case with hyphens")
        elif meta == "event":
            if not EVENT_NAME_RE.match(name):
                raise QAPIError(info, f"name of event '{name}' should be ALL_CAPS")

        if meta == "enum":
            self._define_enum(name, expr, info, doc, feats)
        elif meta == "struct":
            base = expr.get("base")
            if base is not None and not isinstance(base, str):
                raise QAPIError(info, "'base' should be a type name")
            self._define(ObjectType(name, info, doc, feats, base,
                                    self._members(expr["data"], info)), info)
        elif meta == "union":
            self._define_union(name, expr, info, doc, feats)
        elif meta == "alternate":
            data = expr["data"]
            if not isinstance(data, dict) or not data:
                raise QAPIError(info, "'data' must be a non-empty object")
            variants = []
            for key, val in data.items():
                if isinstance(val, dict):
                    if not self._enabled(val.get("if"), info):
                        continue
                    val = val.get("type")
                tref = self._type_ref(val, info, f"branch '{key}'")
                variants.append(Variant(key, tref if isinstance(tref, str) else f"[{tref[0]}]", info))
            self._define(AlternateType(name, info, doc, feats, Variants(None, variants)), info)
        elif meta == "command":
            self._define_command(name, expr, info, doc, feats)
        else:
            data = expr.get("data")
            boxed = expr.get("boxed", False)
            arg_name = self._arg_type(name, data, info, boxed, "arg")
            self._define(Event(name, info, doc, feats, arg_name, None, boxed), info)

    def _define_enum(self, name, expr, info, doc, feats) -> None:
        data = expr["data"]
        if not isinstance(data, list):
            raise QAPIError(info, "'data' must be an array")
        values: list[EnumValue] = []
        for v in data:
            if isinstance(v, dict):
                if "name" not in v:
                    raise QAPIError(info, "enum value is missing 'name'")
                if not self._enabled(v.get("if"), info):
                    continue
                vfeats = self._features(v.get("features"), info)
                v = v["name"]
            else:
                vfeats = []
            if not isinstance(v, str):
                raise QAPIError(info, "enum values must be strings")
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", v):
                raise QAPIError(info, f"value '{v}' has an invalid name")
            if any(c_name(o.name) == c_name(v) for o in values):
                raise QAPIError(info, f"value '{v}' clashes with an earlier value")
            values.append(EnumValue(v, info, vfeats))
        prefix = expr.get("prefix")
        if prefix is not None and not isinstance(prefix, str):
            raise QAPIError(info, "'prefix' must be a string")
        self._define(EnumType(name, info, doc, feats, values, prefix), info)

    def _define_union(self, name, expr, info, doc, feats) -> None:
        data = expr["data"]
        if not isinstance(data, dict):
            raise QAPIError(info, "'data' must be an object")
        base = expr.get("base")
        disc = expr.get("discriminator")
        branches: list[tuple[str, Any, SourceInfo]] = []
        for key, val in data.items():
            if isinstance(val, dict) and "type" in val:
                if set(val) - {"type", "if"}:
                    raise QAPIError(info, f"branch '{key}' has unexpected keys")
                if not self._enabled(val.get("if"), info):
                    continue
                val = val["type"]
            branches.append((key, self._type_ref(val, info, f"branch '{key}'"), info))
        if base is None:
            # A simple union: an implicit enum of the branch names, and each
            # branch wrapped in an object with one member 'data'.
            if disc is not None:
                raise QAPIError(info, "'discriminator' requires 'base'")
            kind = f"{name}Kind"
            self._define(EnumType(kind, info, None, [],
                                  [EnumValue(k, info) for k, _, _ in branches]), info)
            variants = []
            for key, tref, binfo in branches:
                tname = tref if isinstance(tref, str) else f"[{tref[0]}]"
                wrapper = f"q_obj_{c_name(tname) if isinstance(tref, str) else tref[0] + 'List'}-wrapper"
                if wrapper not in self.entities:
                    self._define(ObjectType(wrapper, info, None, [], None,
                                            [Member("data", tname, False, info)]), info)
                variants.append(Variant(key, wrapper, binfo))
            base_name = f"q_obj_{name}-base"
            self._define(ObjectType(base_name, info, None, [], None,
                                    [Member("type", kind, False, info)]), info)
            self._define(ObjectType(name, info, doc, feats, base_name, [],
                                    Variants("type", variants), meta="union"), info)
            return
        if disc is None:
            raise QAPIError(info, "'discriminator' is required with 'base'")
        if isinstance(base, dict):
            base_name = self._implicit_object(f"q_obj_{name}-base", base, info)
        elif isinstance(base, str):
            base_name = base
        else:
            raise QAPIError(info, "'base' must be a type name or an object")
        variants = []
        for key, tref, binfo in branches:
            if not isinstance(tref, str):
                raise QAPIError(info, f"branch '{key}' cannot be an array")
            variants.append(Variant(key, tref, binfo))
        self._define(ObjectType(name, info, doc, feats, base_name, [],
                                Variants(disc, variants), meta="union"), info)

    def _arg_type(self, name: str, data: Any, info: SourceInfo, boxed: bool,
                  suffix: str) -> Optional[str]:
        if data is None:
            if boxed:
                raise QAPIError(info, "'boxed': true requires 'data'")
            return None
        if isinstance(data, dict):
            if boxed:
                raise QAPIError(info, "'data' must be a type name with 'boxed': true")
            return self._implicit_object(f"q_obj_{name}-{suffix}", data, info)
        if isinstance(data, str):
            return data
        raise QAPIError(info, "'data' should be an object or type name")

    def _define_command(self, name, expr, info, doc, feats) -> None:
        boxed = expr.get("boxed", False)
        arg_name = self._arg_type(name, expr.get("data"), info, boxed, "arg")
        rets = expr.get("returns")
        ret_name = None
        if rets is not None:
            tref = self._type_ref(rets, info, "'returns'")
            ret_name = tref if isinstance(tref, str) else f"[{tref[0]}]"
        gen = expr.get("gen", True)
        success = expr.get("success-response", True)
        self._define(Command(name, info, doc, feats, arg_name, None, ret_name, gen, success,
                             boxed, expr.get("allow-oob", False),
                             expr.get("allow-preconfig", False),
                             expr.get("coroutine", False)), info)

    # -- resolution ---------------------------------------------------------
    def resolve_type(self, tname: str, info: SourceInfo, what: str) -> Type:
        if tname.startswith("["):
            elem = tname[1:-1]
            if elem not in self.arrays:
                arr = ArrayType(elem, None)
                self.arrays[elem] = arr
                arr.element = self.resolve_type(elem, info, what)
                if isinstance(arr.element, ArrayType):
                    raise QAPIError(info, f"{what}: array of arrays is not supported")
            return self.arrays[elem]
        ent = self.entities.get(tname)
        if ent is None:
            raise QAPIError(info, f"{what} uses unknown type '{tname}'")
        if not isinstance(ent, Type):
            raise QAPIError(info, f"{what} uses {ent.meta} '{tname}' instead of a type")
        return ent

    def _resolve(self) -> None:
        for ent in list(self.order):
            if isinstance(ent, ObjectType):
                self._check_object(ent)
        for ent in list(self.order):
            if isinstance(ent, AlternateType):
                self._check_alternate(ent)
            elif isinstance(ent, Command):
                self._check_command(ent)
            elif isinstance(ent, Event):
                self._check_event(ent)
        self._check_docs()

    def _check_object(self, obj: ObjectType, stack: tuple[str, ...] = ()) -> None:
        if obj.checked:
            return
        info = obj.info
        if obj.name in stack:
            raise QAPIError(info, f"object {obj.name} contains itself")
        members: list[Member] = []
        if obj.base_name is not None:
            base = self.resolve_type(obj.base_name, info, "'base'")
            if not isinstance(base, ObjectType) or base.is_union():
                raise QAPIError(info, f"'base' requires a struct type, {base.meta} '{base.name}' isn't")
            self._check_object(base, stack + (obj.name,))
            obj.base = base
            members = list(base.members)
        seen = {c_name(m.name): m for m in members}
        for m in obj.local_members:
            m.type = self.resolve_type(m.type_name, m.info, f"member '{m.name}'")
            m.owner = obj
            if c_name(m.name) in seen:
                other = seen[c_name(m.name)]
                raise QAPIError(info, f"member '{m.name}' collides with member '{other.name}'"
                                + (f" of type '{other.owner.name}'" if other.owner and other.owner is not obj else ""))
            seen[c_name(m.name)] = m
            members.append(m)
        obj.members = members
        if obj.variants is not None:
            v = obj.variants
            tag = next((m for m in members if m.name == v.tag_name), None)
            if tag is None:
                raise QAPIError(info, f"discriminator '{v.tag_name}' is not a member of 'base'")
            if tag.optional:
                raise QAPIError(info, f"discriminator member '{v.tag_name}' of 'base' must not be optional")
            if not isinstance(tag.type, EnumType):
                raise QAPIError(info, f"discriminator member '{v.tag_name}' of 'base' must be of enum type")
            v.tag_member = tag
            names = [ev.name for ev in tag.type.values]
            for var in v.variants:
                if var.name not in names:
                    raise QAPIError(info, f"branch '{var.name}' is not a value of enum type '{tag.type.name}'")
                var.type = self.resolve_type(var.type_name, var.info, f"branch '{var.name}'")
                if not isinstance(var.type, ObjectType) or var.type.is_union():
                    raise QAPIError(info, f"branch '{var.name}' cannot use {var.type.meta} type '{var.type.name}'")
                self._check_object(var.type, stack + (obj.name,))
                for bm in var.type.members:
                    if c_name(bm.name) in seen:
                        raise QAPIError(info, f"member '{bm.name}' of type '{var.type.name}' collides with member '{bm.name}' of type '{seen[c_name(bm.name)].owner.name if seen[c_name(bm.name)].owner else obj.name}'")
        obj.checked = True

    def _check_alternate(self, alt: AlternateType) -> None:
        seen_json: dict[str, str] = {}
        for var in alt.variants.variants:
            var.type = self.resolve_type(var.type_name, var.info, f"branch '{var.name}'")
            t = var.type
            if isinstance(t, AlternateType):
                raise QAPIError(alt.info, f"branch '{var.name}' cannot use alternate type '{t.name}'")
            kinds = [t.json_type]
            if isinstance(t, BuiltinType) and t.spec.json in ("int", "number"):
                kinds = ["number"] if t.spec.json == "number" else ["int"]
            for k in kinds:
                conflict = seen_json.get(k)
                if k == "int" and "number" in seen_json:
                    conflict = seen_json["number"]
                if k == "number" and "int" in seen_json:
                    conflict = seen_json["int"]
                if conflict:
                    raise QAPIError(alt.info, f"branch '{var.name}' can't be distinguished from '{conflict}'")
                seen_json[k] = var.name

    def _check_command(self, cmd: Command) -> None:
        info = cmd.info
        if cmd.arg_name is not None:
            arg = self.resolve_type(cmd.arg_name, info, "command's 'data'")
            if not isinstance(arg, ObjectType):
                raise QAPIError(info, f"command's 'data' cannot take {arg.meta} type '{arg.name}'")
            if arg.is_union() and not cmd.boxed:
                raise QAPIError(info, "command's 'data' can take union type only with 'boxed': true")
            cmd.arg_type = arg
        if cmd.ret_name is not None:
            cmd.ret_type = self.resolve_type(cmd.ret_name, info, "command's 'returns'")
            rt = cmd.ret_type
            if not isinstance(rt, (ObjectType, ArrayType)) and \
                    cmd.name not in self.pragma.get("command-returns-exceptions", []):
                raise QAPIError(info, f"command's 'returns' cannot take type '{rt.name}'")
        if cmd.coroutine and cmd.allow_oob:
            raise QAPIError(info, "flags 'allow-oob' and 'coroutine' are incompatible")

    def _check_event(self, ev: Event) -> None:
        if ev.arg_name is not None:
            arg = self.resolve_type(ev.arg_name, ev.info, "event's 'data'")
            if not isinstance(arg, ObjectType):
                raise QAPIError(ev.info, f"event's 'data' cannot take {arg.meta} type '{arg.name}'")
            if arg.is_union() and not ev.boxed:
                raise QAPIError(ev.info, "event's 'data' can take union type only with 'boxed': true")
            ev.arg_type = arg

    def _check_docs(self) -> None:
        for ent in self.order:
            if ent.doc is None or ent.info is None:
                continue
            documented = set(ent.doc.args)
            if isinstance(ent, (ObjectType,)):
                names = {m.name for m in ent.local_members}
                if ent.variants and ent.base and ent.base.is_implicit():
                    names |= {m.name for m in ent.base.local_members}
                names |= {m.name for m in ent.members}
            elif isinstance(ent, EnumType):
                names = {v.name for v in ent.values}
            elif isinstance(ent, (Command, Event)):
                arg = ent.arg_type
                names = {m.name for m in arg.members} if arg and not ent.boxed else set()
            elif isinstance(ent, AlternateType):
                names = {v.name for v in ent.variants.variants}
            else:
                names = set()
            for extra in sorted(documented - names):
                raise QAPIError(ent.doc.info, f"documented member '{extra}' does not exist")
            known = set(ent.feature_names())
            if isinstance(ent, ObjectType):
                known |= {f.name for m in ent.members for f in m.features}
            if isinstance(ent, EnumType):
                known |= {f.name for v in ent.values for f in v.features}
            if isinstance(ent, (Command, Event)) and ent.arg_type is not None:
                known |= {f.name for m in ent.arg_type.members for f in m.features}
            for fname in sorted(set(ent.doc.features) - known):
                raise QAPIError(ent.doc.info, f"documented feature '{fname}' does not exist")

    # -- queries for back ends ----------------------------------------------
    def types(self) -> list[Type]:
        return [e for e in self.order if isinstance(e, Type)]

    def commands(self) -> list[Command]:
        return [e for e in self.order if isinstance(e, Command)]

    def events(self) -> list[Event]:
        return [e for e in self.order if isinstance(e, Event)]
