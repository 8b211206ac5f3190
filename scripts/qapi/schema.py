"""The semantic model of a QAPI schema.

Stages: the parser gives expressions; check_expr() checks each one's shape;
Schema builds entities (types, commands, events), resolves names, desugars
simple unions and implicit types, and detects clashes.  Back ends only read
the finished model.

'if' conditions are evaluated here against the configuration symbols the
build defines: a definition, member, branch or enum value whose condition is
false does not exist for the back ends, exactly as if QEMU's generated #if
had compiled it out.  Whether a schema is valid does not depend on them:
check_expr() and the checks of references and doc comments look at every
definition, member, branch, value and feature, whatever its condition.

Every error is a QAPIError naming file, line and definition; the tests in
tests/qapi/ hold one bad schema per error.
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

# A configuration symbol, as the build passes it with -D.
IF_SYMBOL_RE = re.compile(r"[A-Z][A-Z0-9_]*")


class IfCond:
    """An 'if' condition: a symbol, or all/any/not of conditions."""

    def __init__(self, raw: Any, info: SourceInfo, ctx: str = ""):
        self.raw = raw
        _check_if(raw, info, ctx)

    def evaluate(self, defined: set[str]) -> bool:
        return _eval_if(self.raw, defined)


def _check_if(raw: Any, info: SourceInfo, ctx: str = "") -> None:
    """Checks a condition; ctx names what it belongs to, '' for a definition."""
    where = f"{ctx}: " if ctx else ""

    def check(cond: Any) -> None:
        if isinstance(cond, str):
            if not IF_SYMBOL_RE.fullmatch(cond):
                raise QAPIError(info, f"{where}'if' condition '{cond}' is not a valid "
                                "configuration symbol (upper-case letters, digits and '_')")
            return
        if isinstance(cond, dict):
            if len(cond) != 1:
                raise QAPIError(info, f"{where}'if' condition object must have exactly "
                                "one key, 'all', 'any' or 'not'")
            (op, arg), = cond.items()
            if op == "not":
                check(arg)
                return
            if op in ("all", "any"):
                if not isinstance(arg, list) or not arg:
                    raise QAPIError(info, f"{where}'if' condition '{op}' needs a "
                                    "non-empty list of conditions")
                for a in arg:
                    check(a)
                return
            raise QAPIError(info, f"{where}'if' condition has unknown operator '{op}'; "
                            "expected 'all', 'any' or 'not'")
        raise QAPIError(info, f"{where}'if' condition must be a string or an object")

    check(raw)


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
    # A simple union's branch type, which type_name's wrapper holds.
    wrapped: Optional[str] = None

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
#
# check_expr() checks one expression's shape before any entity is built.  It
# looks at everything, including the definitions, members, branches, values
# and features whose 'if' is false in this build: whether a schema is valid
# does not depend on the configuration.

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

TYPE_NAME_RE = re.compile(r"^(x-)?[A-Z][A-Za-z0-9]*$")
LOWER_NAME_RE = re.compile(r"^(x-)?[a-z][a-z0-9-]*$")
EVENT_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
MEMBER_NAME_RE = re.compile(r"^(x-)?[a-z][a-z0-9_-]*$", re.I)
VALUE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# What a reference to a type may look like (built-in or defined).
TYPE_REF_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


def _meta_of(expr: dict[str, Any], info: SourceInfo) -> str:
    metas = [meta for meta in KEYS if meta in expr]
    if not metas:
        raise QAPIError(info, "expression is missing metatype; expected one of "
                        + ", ".join(f"'{m}'" for m in KEYS))
    if len(metas) > 1:
        raise QAPIError(info, "expression has more than one metatype: "
                        + ", ".join(f"'{m}'" for m in metas))
    return metas[0]


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


def _check_if_opt(raw: Any, info: SourceInfo, ctx: str = "") -> None:
    if raw is not None:
        _check_if(raw, info, ctx)


def _uses_prefix(name: str, prefix: str) -> bool:
    """Whether name's C++ form starts with prefix ('-' and '.' count as '_')."""
    return re.sub(r"[-.]", "_", name).lower().startswith(prefix)


def check_features(raw: Any, info: SourceInfo, ctx: str = "") -> None:
    where = f"{ctx}: " if ctx else ""
    if raw is None:
        return
    if not isinstance(raw, list):
        raise QAPIError(info, f"{where}'features' must be an array")
    seen: set[str] = set()
    for f in raw:
        if isinstance(f, str):
            name = f
        elif isinstance(f, dict):
            if "name" not in f:
                raise QAPIError(info, f"{where}feature is missing key 'name'")
            name = f["name"]
            if not isinstance(name, str):
                raise QAPIError(info, f"{where}feature's 'name' must be a string")
            for key in f:
                if key not in ("name", "if"):
                    raise QAPIError(info, f"{where}feature '{name}' has unexpected "
                                    f"key '{key}'")
            _check_if_opt(f.get("if"), info, f"{where}feature '{name}'")
        else:
            raise QAPIError(info, f"{where}'features' members must be strings or "
                            "objects with 'name'")
        if not LOWER_NAME_RE.match(name):
            raise QAPIError(info, f"{where}feature '{name}' has an invalid name")
        if name in seen:
            raise QAPIError(info, f"{where}feature '{name}' is listed twice")
        seen.add(name)


def check_type_ref(raw: Any, info: SourceInfo, what: str,
                   allow_array: bool = True) -> None:
    """A type reference: a type name, or (if allowed) a one-element array."""
    if isinstance(raw, list):
        if not allow_array:
            raise QAPIError(info, f"{what} cannot be an array")
        if len(raw) == 1 and isinstance(raw[0], list):
            raise QAPIError(info, f"{what} cannot be an array of arrays")
        if len(raw) != 1 or not isinstance(raw[0], str):
            raise QAPIError(info, f"{what}: array type must contain single type name")
        raw = raw[0]
    if not isinstance(raw, str):
        raise QAPIError(info, f"{what} should be a type name")
    # Names of implicit types (q_obj_...) are not for the schema to use.
    if not TYPE_REF_RE.match(raw) or raw.startswith("q_"):
        raise QAPIError(info, f"{what} uses unknown type '{raw}'")


def _check_member_name(name: str, info: SourceInfo, kind: str) -> None:
    if not MEMBER_NAME_RE.match(name):
        raise QAPIError(info, f"{kind} '{name}' has an invalid name")
    if _uses_prefix(name, "q_"):
        raise QAPIError(info, f"{kind} '{name}' uses reserved prefix 'q_'")
    if _uses_prefix(name, "has_"):
        raise QAPIError(info, f"{kind} '{name}' uses reserved prefix '{name[:4]}'")


def _check_value_name(name: str, info: SourceInfo, kind: str) -> None:
    if not VALUE_NAME_RE.match(name):
        raise QAPIError(info, f"{kind} '{name}' has an invalid name")
    if _uses_prefix(name, "q_"):
        raise QAPIError(info, f"{kind} '{name}' uses reserved prefix 'q_'")


def _check_clash(seen: dict[str, str], name: str, info: SourceInfo, kind: str) -> None:
    """Two names of one kind must differ in C++ too ('a-b' and 'a_b' do not)."""
    cn = c_name(name)
    if cn in seen:
        raise QAPIError(info, f"{kind} '{name}' collides with {kind} '{seen[cn]}'")
    seen[cn] = name


def check_members(raw: Any, info: SourceInfo, what: str = "'data'") -> None:
    if not isinstance(raw, dict):
        raise QAPIError(info, f"{what} must be an object")
    seen: dict[str, str] = {}
    for key, val in raw.items():
        name = key[1:] if key.startswith("*") else key
        ctx = f"member '{name}'"
        _check_member_name(name, info, "member")
        if isinstance(val, dict):
            if "type" not in val:
                raise QAPIError(info, f"{ctx}: key 'type' is missing")
            for k in val:
                if k not in ("type", "if", "features"):
                    raise QAPIError(info, f"{ctx} has unexpected key '{k}'")
            _check_if_opt(val.get("if"), info, ctx)
            check_features(val.get("features"), info, ctx)
            val = val["type"]
        check_type_ref(val, info, ctx)
        _check_clash(seen, name, info, "member")


def _check_branches(data: dict[str, Any], info: SourceInfo, value_names: bool,
                    allow_array: bool) -> None:
    seen: dict[str, str] = {}
    for key, val in data.items():
        ctx = f"branch '{key}'"
        if value_names:
            _check_value_name(key, info, "branch")
        else:
            _check_member_name(key, info, "branch")
        if isinstance(val, dict):
            if "type" not in val:
                raise QAPIError(info, f"{ctx}: key 'type' is missing")
            for k in val:
                if k not in ("type", "if"):
                    raise QAPIError(info, f"{ctx} has unexpected key '{k}'")
            _check_if_opt(val.get("if"), info, ctx)
            val = val["type"]
        check_type_ref(val, info, ctx, allow_array)
        _check_clash(seen, key, info, "branch")


def _check_defn_name(meta: str, name: str, info: SourceInfo,
                     pragma: dict[str, Any]) -> None:
    if name.startswith("q_") or name.lower().startswith("q-"):
        raise QAPIError(info, f"name '{name}' uses reserved prefix 'q_'")
    if meta in ("enum", "struct", "union", "alternate"):
        if not TYPE_NAME_RE.match(name):
            raise QAPIError(info, f"name '{name}' should use CamelCase")
        for suffix in ("List", "Kind"):
            if name.endswith(suffix):
                raise QAPIError(info, f"name '{name}' should not end in '{suffix}', "
                                "which implicit types use")
    elif meta == "command":
        if LOWER_NAME_RE.match(name) or \
                name in pragma.get("command-name-exceptions", []):
            return
        if LOWER_NAME_RE.match(name.replace("_", "-")):
            raise QAPIError(info, f"name '{name}' should use '-', not '_' (unless listed "
                            "in pragma 'command-name-exceptions')")
        raise QAPIError(info, f"name '{name}' should be lower-case words separated by '-'")
    elif meta == "event":
        if not EVENT_NAME_RE.match(name):
            raise QAPIError(info, f"name '{name}' should be ALL_CAPS")


def _check_enum(expr: dict[str, Any], info: SourceInfo) -> None:
    data = expr["data"]
    if not isinstance(data, list):
        raise QAPIError(info, "'data' must be an array")
    seen: dict[str, str] = {}
    for v in data:
        if isinstance(v, dict):
            if "name" not in v:
                raise QAPIError(info, "enum value is missing key 'name'")
            name = v["name"]
            if not isinstance(name, str):
                raise QAPIError(info, "enum value's 'name' must be a string")
            ctx = f"value '{name}'"
            for k in v:
                if k not in ("name", "if", "features"):
                    raise QAPIError(info, f"{ctx} has unexpected key '{k}'")
            _check_if_opt(v.get("if"), info, ctx)
            check_features(v.get("features"), info, ctx)
        elif isinstance(v, str):
            name = v
        else:
            raise QAPIError(info, "enum values must be strings or objects with 'name'")
        _check_value_name(name, info, "value")
        if name in seen.values():
            raise QAPIError(info, f"value '{name}' is listed twice")
        _check_clash(seen, name, info, "value")
    prefix = expr.get("prefix")
    if prefix is not None and not isinstance(prefix, str):
        raise QAPIError(info, "'prefix' must be a string")


def _check_arg_data(expr: dict[str, Any], info: SourceInfo) -> None:
    data = expr.get("data")
    boxed = expr.get("boxed", False)
    if data is None:
        if boxed:
            raise QAPIError(info, "'boxed': true requires 'data'")
        return
    if isinstance(data, dict):
        if boxed:
            raise QAPIError(info, "'data' must be a type name with 'boxed': true")
        check_members(data, info)
        return
    if not isinstance(data, str):
        raise QAPIError(info, "'data' should be an object or type name")
    check_type_ref(data, info, "'data'", allow_array=False)


def check_expr(e: Expr, pragma: dict[str, Any]) -> None:
    """Checks one definition's shape; records its name in its SourceInfo."""
    expr, info, doc = e.expr, e.info, e.doc
    meta = _meta_of(expr, info)
    name = expr[meta]
    if not isinstance(name, str):
        raise QAPIError(info, f"'{meta}' requires a string name")
    info.set_defn(meta, name)
    if doc is not None:
        doc.info.set_defn(meta, name)
    check_keys(expr, info, meta)
    if doc is not None and doc.symbol != name:
        raise QAPIError(doc.info, f"documentation comment is for '{doc.symbol}'")
    if doc is not None and doc.errors:
        line, msg = doc.errors[0]
        raise QAPIError(doc.info.at(line), msg)
    if doc is None and pragma.get("doc-required"):
        raise QAPIError(info, "documentation comment required")
    _check_if_opt(expr.get("if"), info)
    check_features(expr.get("features"), info)
    _check_defn_name(meta, name, info, pragma)

    if meta == "enum":
        _check_enum(expr, info)
    elif meta == "struct":
        if "base" in expr:
            check_type_ref(expr["base"], info, "'base'", allow_array=False)
        check_members(expr["data"], info)
    elif meta == "union":
        data = expr["data"]
        if not isinstance(data, dict):
            raise QAPIError(info, "'data' must be an object")
        base = expr.get("base")
        disc = expr.get("discriminator")
        if disc is not None and not isinstance(disc, str):
            raise QAPIError(info, "'discriminator' must be a string")
        if base is None:
            # A simple union: its branch names make an implicit enum.
            if disc is not None:
                raise QAPIError(info, "'discriminator' requires 'base'")
            if not data:
                raise QAPIError(info, "'data' must not be empty")
        else:
            if disc is None:
                raise QAPIError(info, "'discriminator' is required with 'base'")
            if isinstance(base, dict):
                check_members(base, info, "'base'")
            else:
                check_type_ref(base, info, "'base'", allow_array=False)
        _check_branches(data, info, value_names=True, allow_array=base is None)
    elif meta == "alternate":
        data = expr["data"]
        if not isinstance(data, dict):
            raise QAPIError(info, "'data' must be an object")
        if not data:
            raise QAPIError(info, "'data' must not be empty")
        _check_branches(data, info, value_names=False, allow_array=True)
    elif meta == "command":
        _check_arg_data(expr, info)
        if "returns" in expr:
            check_type_ref(expr["returns"], info, "'returns'")
        if expr.get("coroutine") and expr.get("allow-oob"):
            raise QAPIError(info, "flags 'allow-oob' and 'coroutine' are incompatible")
    else:
        _check_arg_data(expr, info)


def _type_name(raw: Any) -> str:
    """A checked type reference as one string: 'T', or '[T]' for an array."""
    return raw if isinstance(raw, str) else f"[{raw[0]}]"


def _describe(ent: Entity) -> str:
    if isinstance(ent, ArrayType):
        return f"array type '[{ent.element_name}]'"
    if isinstance(ent, BuiltinType):
        return f"built-in type '{ent.name}'"
    if isinstance(ent, (Command, Event)):
        return f"{ent.meta} '{ent.name}'"
    return f"{ent.meta} type '{ent.name}'"


# JSON values each kind of alternate branch accepts, for error messages.
_JSON_KIND_NAMES = {"string": "string", "int": "number", "number": "number",
                    "boolean": "boolean", "null": "null", "object": "object",
                    "array": "array"}

# Names the generated C++ for a union type declares besides its members.
_UNION_CXX_NAMES = {"u", "get", "get_if", "emplace"}


class Schema:
    def __init__(self, exprs: list[Expr], pragma: dict[str, Any], defined: set[str]):
        self.defined = defined
        self.pragma = pragma
        self.exprs = exprs
        self.entities: dict[str, Entity] = {}
        self.order: list[Entity] = []
        self.arrays: dict[str, ArrayType] = {}
        # Every definition by name, whatever its condition: for the checks
        # that do not depend on the configuration.
        self.raw: dict[str, list[Expr]] = {}
        for e in exprs:
            check_expr(e, pragma)
            self.raw.setdefault(e.info.defn_name or "", []).append(e)
        for e in exprs:
            self._check_raw_refs(e)
        for name, spec in BUILTINS.items():
            self._define(BuiltinType(name, spec), None)
        self._define(EnumType("QType", None, None, [], [
            EnumValue(v, None) for v in
            ("none", "qnull", "qnum", "qstring", "qdict", "qlist", "qbool")]), None)
        for e in exprs:
            self._define_expr(e)
        self._resolve()

    def _check_raw_refs(self, e: Expr) -> None:
        """Every type a definition names must be defined, whatever the
        conditions: in some configuration, the definition is in the build.
        (Whether the name is a type, and one that fits, is checked once the
        entities exist.)"""
        for what, ref in _raw_type_refs(e):
            name = ref if isinstance(ref, str) else ref[0]
            if name not in BUILTINS and name != "QType" and name not in self.raw:
                raise QAPIError(e.info, f"{what} uses unknown type '{name}'")

    # -- definition -------------------------------------------------------
    def lookup(self, name: str) -> Optional[Entity]:
        return self.entities.get(name)

    def _define(self, ent: Entity, info: Optional[SourceInfo]) -> None:
        if ent.name in self.entities:
            other = self.entities[ent.name]
            if other.info is None:
                raise QAPIError(info, f"'{ent.name}' is a built-in type")
            where = f" at {other.info.fname}:{other.info.line}"
            raise QAPIError(info, f"'{ent.name}' is already defined{where}"
                            if other.meta == ent.meta else
                            f"'{ent.name}' is already defined as {other.meta}{where}")
        self.entities[ent.name] = ent
        self.order.append(ent)

    def _enabled(self, raw: Any, info: SourceInfo) -> bool:
        if raw is None:
            return True
        return IfCond(raw, info).evaluate(self.defined)

    def _features(self, raw: Any, info: SourceInfo) -> list[Feature]:
        out = []
        for f in raw or []:
            if isinstance(f, str):
                name, cond = f, None
            else:
                name, cond = f["name"], f.get("if")
            if self._enabled(cond, info):
                out.append(Feature(name, info))
        return out

    def _members(self, raw: dict[str, Any], info: SourceInfo) -> list[Member]:
        out: list[Member] = []
        for key, val in raw.items():
            optional = key.startswith("*")
            name = key[1:] if optional else key
            feats: list[Feature] = []
            if isinstance(val, dict):
                if not self._enabled(val.get("if"), info):
                    continue
                feats = self._features(val.get("features"), info)
                val = val["type"]
            out.append(Member(name, _type_name(val), optional, info, feats))
        return out

    def _implicit_object(self, name: str, raw: Any, info: SourceInfo) -> str:
        obj = ObjectType(name, info, None, [], None, self._members(raw, info))
        self._define(obj, info)
        return name

    def _branches(self, data: dict[str, Any], info: SourceInfo) -> list[tuple[str, Any]]:
        """The enabled branches of a union or alternate: (name, type reference)."""
        out = []
        for key, val in data.items():
            if isinstance(val, dict):
                if not self._enabled(val.get("if"), info):
                    continue
                val = val["type"]
            out.append((key, val))
        return out

    def _define_expr(self, e: Expr) -> None:
        expr, info, doc = e.expr, e.info, e.doc
        meta = info.defn_meta
        assert meta is not None
        name = expr[meta]
        if not self._enabled(expr.get("if"), info):
            return
        feats = self._features(expr.get("features"), info)
        if meta == "enum":
            self._define_enum(name, expr, info, doc, feats)
        elif meta == "struct":
            self._define(ObjectType(name, info, doc, feats, expr.get("base"),
                                    self._members(expr["data"], info)), info)
        elif meta == "union":
            self._define_union(name, expr, info, doc, feats)
        elif meta == "alternate":
            variants = [Variant(key, _type_name(tref), info)
                        for key, tref in self._branches(expr["data"], info)]
            if not variants:
                raise QAPIError(info, "every branch is disabled by its 'if' condition "
                                "in this configuration")
            self._define(AlternateType(name, info, doc, feats, Variants(None, variants)), info)
        elif meta == "command":
            self._define_command(name, expr, info, doc, feats)
        else:
            arg_name = self._arg_type(name, expr.get("data"), info)
            self._define(Event(name, info, doc, feats, arg_name, None,
                               expr.get("boxed", False)), info)

    def _define_enum(self, name, expr, info, doc, feats) -> None:
        values: list[EnumValue] = []
        for v in expr["data"]:
            if isinstance(v, dict):
                if not self._enabled(v.get("if"), info):
                    continue
                values.append(EnumValue(v["name"], info,
                                        self._features(v.get("features"), info)))
            else:
                values.append(EnumValue(v, info, []))
        self._define(EnumType(name, info, doc, feats, values, expr.get("prefix")), info)

    def _define_union(self, name, expr, info, doc, feats) -> None:
        base = expr.get("base")
        disc = expr.get("discriminator")
        branches = self._branches(expr["data"], info)
        if base is None:
            # A simple union: an implicit enum of the branch names, and each
            # branch wrapped in an object with one member 'data'.
            if not branches:
                raise QAPIError(info, "every branch is disabled by its 'if' condition "
                                "in this configuration")
            kind = f"{name}Kind"
            self._define(EnumType(kind, info, None, [],
                                  [EnumValue(k, info) for k, _ in branches]), info)
            variants = []
            for key, tref in branches:
                tname = _type_name(tref)
                wrapper = f"q_obj_{c_name(tname) if isinstance(tref, str) else tref[0] + 'List'}-wrapper"
                if wrapper not in self.entities:
                    self._define(ObjectType(wrapper, info, None, [], None,
                                            [Member("data", tname, False, info)]), info)
                variants.append(Variant(key, wrapper, info, wrapped=tname))
            base_name = f"q_obj_{name}-base"
            self._define(ObjectType(base_name, info, None, [], None,
                                    [Member("type", kind, False, info)]), info)
            self._define(ObjectType(name, info, doc, feats, base_name, [],
                                    Variants("type", variants), meta="union"), info)
            return
        if isinstance(base, dict):
            base_name = self._implicit_object(f"q_obj_{name}-base", base, info)
        else:
            base_name = base
        variants = [Variant(key, tref, info) for key, tref in branches]
        self._define(ObjectType(name, info, doc, feats, base_name, [],
                                Variants(disc, variants), meta="union"), info)

    def _arg_type(self, name: str, data: Any, info: SourceInfo) -> Optional[str]:
        if data is None:
            return None
        if isinstance(data, dict):
            return self._implicit_object(f"q_obj_{name}-arg", data, info)
        return data

    def _define_command(self, name, expr, info, doc, feats) -> None:
        arg_name = self._arg_type(name, expr.get("data"), info)
        rets = expr.get("returns")
        ret_name = _type_name(rets) if rets is not None else None
        self._define(Command(name, info, doc, feats, arg_name, None, ret_name,
                             expr.get("gen", True), expr.get("success-response", True),
                             expr.get("boxed", False), expr.get("allow-oob", False),
                             expr.get("allow-preconfig", False),
                             expr.get("coroutine", False)), info)

    # -- resolution ---------------------------------------------------------
    def resolve_type(self, tname: str, info: SourceInfo, what: str) -> Type:
        if tname.startswith("["):
            elem = tname[1:-1]
            if elem not in self.arrays:
                arr = ArrayType(elem, None)
                arr.element = self.resolve_type(elem, info, what)
                # check_type_ref() rejects arrays of arrays.
                assert not isinstance(arr.element, ArrayType)
                self.arrays[elem] = arr
            return self.arrays[elem]
        ent = self.entities.get(tname)
        if ent is None and tname in self.raw:
            raise QAPIError(info, f"{what} uses '{tname}', which its 'if' condition "
                            "leaves out of this configuration")
        if ent is None:
            raise QAPIError(info, f"{what} uses unknown type '{tname}'")
        if not isinstance(ent, Type):
            raise QAPIError(info, f"{what} uses {ent.meta} '{tname}' instead of a type")
        return ent

    def _resolve(self) -> None:
        # A simple union's branch types: name the branch, not the wrapper,
        # in errors.
        for ent in list(self.order):
            if isinstance(ent, ObjectType) and ent.variants is not None:
                for var in ent.variants.variants:
                    if var.wrapped is not None:
                        self.resolve_type(var.wrapped, var.info, f"branch '{var.name}'")
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
        self._check_containment()
        self._check_commands_clash()
        for e in self.exprs:
            if e.doc is not None:
                self._check_doc(e)

    def _check_object(self, obj: ObjectType, stack: tuple[str, ...] = ()) -> None:
        if obj.checked:
            return
        info = obj.info
        if obj.name in stack:
            cycle = stack[stack.index(obj.name):] + (obj.name,)
            raise QAPIError(info, "base types form a cycle: " + " -> ".join(cycle))
        members: list[Member] = []
        if obj.base_name is not None:
            base = self.resolve_type(obj.base_name, info, "'base'")
            if not isinstance(base, ObjectType) or base.is_union():
                raise QAPIError(info, f"'base' requires a struct type, {_describe(base)} isn't")
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
            self._check_variants(obj, seen, stack)
        obj.checked = True

    def _check_variants(self, obj: ObjectType, seen: dict[str, Member],
                        stack: tuple[str, ...]) -> None:
        info = obj.info
        v = obj.variants
        assert v is not None and obj.base is not None
        tag = next((m for m in obj.members if m.name == v.tag_name), None)
        if tag is None:
            raise QAPIError(info, f"discriminator '{v.tag_name}' is not a member of 'base'")
        if tag.optional:
            raise QAPIError(info, f"discriminator member '{v.tag_name}' of 'base' must not be optional")
        assert tag.type is not None
        if not isinstance(tag.type, EnumType):
            raise QAPIError(info, f"discriminator member '{v.tag_name}' of 'base' must be "
                            f"of enum type, not {_describe(tag.type)}")
        for m in obj.members:
            if m.c_name in _UNION_CXX_NAMES:
                raise QAPIError(info, f"member '{m.name}' collides with '{m.c_name}', "
                                "which the generated C++ union type declares")
        v.tag_member = tag
        names = [ev.name for ev in tag.type.values]
        base_desc = ("the base" if obj.base.is_implicit()
                     else f"base type '{obj.base.name}'")
        for var in v.variants:
            if var.name not in names:
                raise QAPIError(info, f"branch '{var.name}' is not a value of enum type '{tag.type.name}'")
            var.type = self.resolve_type(var.type_name, var.info, f"branch '{var.name}'")
            if not isinstance(var.type, ObjectType) or var.type.is_union():
                raise QAPIError(info, f"branch '{var.name}' cannot use {_describe(var.type)}")
            self._check_object(var.type, stack + (obj.name,))
            for bm in var.type.members:
                other = seen.get(c_name(bm.name))
                if other is not None:
                    owner = bm.owner.name if bm.owner else var.type.name
                    raise QAPIError(info, f"member '{bm.name}' of branch '{var.name}' "
                                    f"(type '{owner}') collides with member "
                                    f"'{other.name}' of {base_desc}")

    def _check_alternate(self, alt: AlternateType) -> None:
        seen_json: dict[str, str] = {}
        for var in alt.variants.variants:
            var.type = self.resolve_type(var.type_name, var.info, f"branch '{var.name}'")
            t = var.type
            if isinstance(t, AlternateType) or \
                    (isinstance(t, BuiltinType) and t.name == "any"):
                raise QAPIError(alt.info, f"branch '{var.name}' cannot use {_describe(t)}")
            # Integers and numbers are both JSON numbers.
            kind = _JSON_KIND_NAMES[t.json_type]
            if kind in seen_json:
                raise QAPIError(alt.info, f"branch '{var.name}' can't be distinguished "
                                f"from branch '{seen_json[kind]}': both take a JSON {kind}")
            seen_json[kind] = var.name

    def _check_arg(self, ent: Union["Command", "Event"]) -> None:
        if ent.arg_name is None:
            return
        arg = self.resolve_type(ent.arg_name, ent.info, "'data'")
        if not isinstance(arg, ObjectType):
            raise QAPIError(ent.info, f"'data' cannot take {_describe(arg)}")
        if arg.is_union() and not ent.boxed:
            raise QAPIError(ent.info, "'data' can take union type only with 'boxed': true")
        ent.arg_type = arg

    def _check_command(self, cmd: Command) -> None:
        self._check_arg(cmd)
        if cmd.ret_name is not None:
            cmd.ret_type = self.resolve_type(cmd.ret_name, cmd.info, "'returns'")
            rt = cmd.ret_type
            if not isinstance(rt, (ObjectType, ArrayType)) and \
                    cmd.name not in self.pragma.get("command-returns-exceptions", []):
                raise QAPIError(cmd.info, f"'returns' must be an object type or an array, "
                                f"not {_describe(rt)}")

    def _check_event(self, ev: Event) -> None:
        self._check_arg(ev)

    def _check_commands_clash(self) -> None:
        """Each command's handler is qmp_<c_name>: two must not share it."""
        seen: dict[str, str] = {}
        for cmd in self.commands():
            other = seen.setdefault(cmd.c_name, cmd.name)
            if other != cmd.name:
                raise QAPIError(cmd.info, f"name '{cmd.name}' collides with "
                                f"command '{other}' in C++")

    def _check_containment(self) -> None:
        """A C++ struct cannot hold itself by value (a base, a member, a
        union branch); recursion must go through an array or an alternate,
        whose object branches are boxed."""
        done: set[str] = set()

        def edges(t: Type) -> list[tuple[str, Type]]:
            out: list[tuple[str, Type]] = []
            if not isinstance(t, ObjectType):
                return out
            if t.is_union():
                assert t.variants is not None
                out += [(f"{t.name}.{m.name}", m.type) for m in t.members
                        if isinstance(m.type, ObjectType)]
                out += [(f"{t.name} (branch '{v.name}')", v.type)
                        for v in t.variants.variants if v.type is not None]
            else:
                if t.base is not None:
                    out.append((f"{t.name} (base)", t.base))
                out += [(f"{t.name}.{m.name}", m.type) for m in t.local_members
                        if isinstance(m.type, ObjectType)]
            return out

        def visit(t: Type, path: list[tuple[Type, str]]) -> None:
            if t.name in done:
                return
            on_path = [p[0].name for p in path]
            if t.name in on_path:
                cycle = path[on_path.index(t.name):]
                # Name the cycle from a type the schema defines, not a wrapper.
                start = next(i for i, (ty, _) in enumerate(cycle) if not ty.is_implicit())
                cycle = cycle[start:] + cycle[:start]
                head = cycle[0][0]
                steps = [label for ty, label in cycle if not ty.is_implicit()]
                raise QAPIError(head.info, "the type contains itself by value: "
                                + " -> ".join(steps + [head.name])
                                + "; recursion needs an array or an alternate")
            for label, dep in edges(t):
                visit(dep, path + [(t, label)])
            done.add(t.name)

        for t in self.order:
            if isinstance(t, ObjectType) and not t.is_implicit():
                visit(t, [])

    # -- documentation --------------------------------------------------------
    def _raw_members(self, ref: Any, seen: tuple[str, ...] = ()) -> list[tuple[str, list[str]]]:
        """(name, feature names) of every member of an object type, inline
        object or union base, its base's included, whatever their conditions."""
        if isinstance(ref, dict):
            out = []
            for key, val in ref.items():
                feats = val.get("features") or [] if isinstance(val, dict) else []
                out.append((key.lstrip("*"),
                            [f if isinstance(f, str) else f["name"] for f in feats]))
            return out
        if not isinstance(ref, str) or ref in seen:
            return []
        out = []
        for e in self.raw.get(ref, []):
            meta = e.info.defn_meta
            if meta == "struct":
                if "base" in e.expr:
                    out += self._raw_members(e.expr["base"], seen + (ref,))
                out += self._raw_members(e.expr["data"], seen + (ref,))
            elif meta == "union":
                if "base" in e.expr:
                    out += self._raw_members(e.expr["base"], seen + (ref,))
                else:
                    out.append(("type", []))
        return out

    def _check_doc(self, e: Expr) -> None:
        """A definition's doc may describe its members (or values, or
        branches) and features, all of them whatever their conditions."""
        doc, expr = e.doc, e.expr
        assert doc is not None
        meta = e.info.defn_meta
        features = set(_raw_feature_names(expr.get("features")))
        members: list[tuple[str, list[str]]] = []
        if meta == "enum":
            for v in expr["data"]:
                if isinstance(v, dict):
                    members.append((v["name"], _raw_feature_names(v.get("features"))))
                else:
                    members.append((v, []))
        elif meta == "struct":
            members = self._raw_members(e.info.defn_name)
        elif meta == "union":
            members = self._raw_members(e.info.defn_name)
        elif meta == "alternate":
            members = [(k, []) for k in expr["data"]]
        elif "data" in expr:
            members = self._raw_members(expr["data"])
            if expr.get("boxed"):
                # The members are documented with the type.
                features |= {f for _, fs in members for f in fs}
                members = []
        names = {name for name, _ in members}
        features |= {f for _, fs in members for f in fs}
        for name in doc.args:
            if name not in names:
                raise QAPIError(doc.info.at(doc.arg_lines[name]),
                                f"documented member '{name}' does not exist")
        for name in doc.features:
            if name not in features:
                raise QAPIError(doc.info.at(doc.feature_lines[name]),
                                f"documented feature '{name}' does not exist")
        for sec in doc.sections:
            if sec.name in ("Returns", "Errors") and meta != "command":
                raise QAPIError(doc.info.at(sec.line),
                                f"'{sec.name}' section is only valid for commands")
            if sec.name == "Returns" and "returns" not in expr:
                raise QAPIError(doc.info.at(sec.line),
                                "'Returns' section, but the command returns nothing")

    # -- queries for back ends ----------------------------------------------
    def types(self) -> list[Type]:
        return [e for e in self.order if isinstance(e, Type)]

    def commands(self) -> list[Command]:
        return [e for e in self.order if isinstance(e, Command)]

    def events(self) -> list[Event]:
        return [e for e in self.order if isinstance(e, Event)]


def _raw_type_refs(e: Expr) -> list[tuple[str, Any]]:
    """(context, type reference) of every type a checked definition names."""
    expr, meta = e.expr, e.info.defn_meta

    def members(data: Any) -> list[tuple[str, Any]]:
        out = []
        for key, val in data.items():
            val = val["type"] if isinstance(val, dict) else val
            out.append((f"member '{key.lstrip('*')}'", val))
        return out

    def branches(data: dict[str, Any]) -> list[tuple[str, Any]]:
        return [(f"branch '{key}'", val["type"] if isinstance(val, dict) else val)
                for key, val in data.items()]

    refs: list[tuple[str, Any]] = []
    base = expr.get("base")
    if isinstance(base, dict):
        refs += members(base)
    elif base is not None:
        refs.append(("'base'", base))
    data = expr.get("data")
    if meta == "struct":
        refs += members(data)
    elif meta in ("union", "alternate"):
        refs += branches(data)
    elif meta in ("command", "event"):
        if isinstance(data, dict):
            refs += members(data)
        elif data is not None:
            refs.append(("'data'", data))
        if "returns" in expr:
            refs.append(("'returns'", expr["returns"]))
    return refs


def _raw_feature_names(raw: Any) -> list[str]:
    return [f if isinstance(f, str) else f["name"] for f in raw or []]
