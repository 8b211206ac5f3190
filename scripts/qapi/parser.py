"""Reads QAPI schema files: the JSON dialect, includes, pragmas and doc comments.

The dialect is the one qapi-code-gen describes: single-quoted strings,
'#' comments, true/false, and '##' blocks that document the definition
that follows.  Each top-level expression comes back with its SourceInfo so
that every later error can name file and line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional


class QAPIError(Exception):
    """A schema error, rendered as 'file:line: In <what>: message'."""

    def __init__(self, info: Optional["SourceInfo"], msg: str):
        super().__init__(msg)
        self.info = info
        self.msg = msg

    def __str__(self) -> str:
        if self.info is None:
            return self.msg
        where = f"{self.info.fname}:{self.info.line}"
        if self.info.defn_meta:
            return f"{where}: In {self.info.defn_meta} '{self.info.defn_name}': {self.msg}"
        return f"{where}: {self.msg}"


@dataclass
class SourceInfo:
    fname: str
    line: int
    defn_meta: Optional[str] = None
    defn_name: Optional[str] = None

    def at(self, line: int) -> "SourceInfo":
        return SourceInfo(self.fname, line, self.defn_meta, self.defn_name)

    def set_defn(self, meta: str, name: str) -> None:
        self.defn_meta = meta
        self.defn_name = name


@dataclass
class DocSection:
    name: str  # '' for free text, 'Since', 'Returns', 'Example', ...
    text: str = ""
    line: int = 0


@dataclass
class Doc:
    """A '##' block: the symbol it documents, its body, members, features."""

    info: SourceInfo
    symbol: Optional[str] = None
    body: str = ""
    args: dict[str, str] = field(default_factory=dict)
    features: dict[str, str] = field(default_factory=dict)
    sections: list[DocSection] = field(default_factory=list)
    # Where each '@name:' line is, for errors.
    arg_lines: dict[str, int] = field(default_factory=dict)
    feature_lines: dict[str, int] = field(default_factory=dict)
    # (line, message) of errors reported once the definition is known.
    errors: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class Expr:
    expr: dict[str, Any]
    info: SourceInfo
    doc: Optional[Doc] = None


# Tagged sections a doc comment may carry, as in qapi-code-gen.
SECTION_RE = re.compile(
    r"^(Returns|Errors|Since|Notes?|Examples?|TODO|Features|Example|Caveats?):\s*(.*)$"
)


class SchemaParser:
    """Parses one file; follows includes through the shared 'seen' set."""

    def __init__(self, fname: str, seen: Optional[set[str]] = None,
                 incl_info: Optional[SourceInfo] = None):
        self.fname = fname
        self.seen = seen if seen is not None else set()
        self.exprs: list[Expr] = []
        self.docs: list[Doc] = []
        self.pragma: dict[str, Any] = {}
        abs_name = os.path.abspath(fname)
        self.seen.add(abs_name)
        try:
            with open(fname, encoding="utf-8") as f:
                self.src = f.read()
        except OSError as e:
            raise QAPIError(incl_info, f"can't read file '{fname}': {e.strerror}")
        except UnicodeDecodeError as e:
            raise QAPIError(incl_info, f"can't read file '{fname}': not valid UTF-8 "
                            f"(byte {e.start})")
        if not self.src.endswith("\n"):
            self.src += "\n"
        self.pos = 0
        self.line = 1
        self.line_start = 0
        self.tok: Any = None
        self.val: Any = None
        self.info = SourceInfo(fname, 1)
        self._parse_file()

    # ---- lexer -------------------------------------------------------
    def _error(self, msg: str) -> QAPIError:
        if self.tok is None:
            # The source always ends in a newline: point at the last line.
            return QAPIError(SourceInfo(self.fname, self.line - 1),
                             f"{msg}, but reached the end of the file")
        col = self.pos - self.line_start
        return QAPIError(SourceInfo(self.fname, self.line), f"{msg} (column {col})")

    def _accept(self, skip_comment: bool = True) -> None:
        while True:
            if self.pos >= len(self.src):
                self.tok = None
                return
            self.tok = self.src[self.pos]
            self.pos += 1
            self.val = None
            if self.tok == "#":
                end = self.src.find("\n", self.pos)
                text = self.src[self.pos:end]
                self.pos = end
                if skip_comment:
                    continue
                self.val = "##" if text == "#" else text
                return
            if self.tok in "{}:,[]":
                return
            if self.tok == "'":
                s = []
                while True:
                    ch = self.src[self.pos]
                    self.pos += 1
                    if ch == "\n":
                        raise self._error("missing terminating \"'\"")
                    if ch == "\\":
                        ch = self.src[self.pos]
                        self.pos += 1
                        if ch == "\n":
                            raise self._error("missing terminating \"'\"")
                        if ch not in "\\'\"":
                            raise self._error(f"unknown escape \\{ch}")
                    elif ch == "'":
                        break
                    if not 0x20 <= ord(ch) < 0x7F:
                        raise self._error("funny character in string")
                    s.append(ch)
                self.val = "".join(s)
                return
            for kw in ("true", "false"):
                if self.src.startswith(kw, self.pos - 1):
                    self.pos += len(kw) - 1
                    self.val = kw == "true"
                    self.tok = "b"
                    return
            if self.tok == "\n":
                self.line += 1
                self.line_start = self.pos
                continue
            if self.tok.isspace():
                continue
            if self.tok == '"':
                raise self._error("strings must be in single quotes, not double quotes")
            m = re.match(r"[^\[\]{}:,\s']+", self.src[self.pos - 1:])
            raise self._error(f"stray '{m.group(0) if m else self.tok}'")

    def _get_value(self) -> Any:
        if self.tok == "{":
            return self._get_members()
        if self.tok == "[":
            return self._get_values()
        if self.tok == "'":
            v = self.val
            self._accept()
            return v
        if self.tok == "b":
            v = self.val
            self._accept()
            return v
        raise self._error("expected '{', '[', string, or boolean")

    def _get_members(self, top: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self._accept()
        if self.tok == "}":
            # A doc block may follow a top-level expression: don't skip it.
            self._accept(skip_comment=not top)
            return out
        while True:
            if self.tok != "'":
                raise self._error("expected string or '}'")
            key = self.val
            if key in out:
                raise self._error(f"duplicate key '{key}'")
            self._accept()
            if self.tok != ":":
                raise self._error("expected ':'")
            self._accept()
            out[key] = self._get_value()
            if self.tok == "}":
                self._accept(skip_comment=not top)
                return out
            if self.tok != ",":
                raise self._error("expected ',' or '}'")
            self._accept()

    def _get_values(self) -> list[Any]:
        out: list[Any] = []
        self._accept()
        if self.tok == "]":
            self._accept()
            return out
        while True:
            out.append(self._get_value())
            if self.tok == "]":
                self._accept()
                return out
            if self.tok != ",":
                raise self._error("expected ',' or ']'")
            self._accept()

    # ---- file structure ----------------------------------------------
    def _parse_file(self) -> None:
        self._accept(skip_comment=False)
        pending_doc: Optional[Doc] = None
        while self.tok is not None:
            info = SourceInfo(self.fname, self.line)
            if self.tok == "#":
                if self.val == "##":
                    _check_doc_followed(pending_doc)
                    doc = self._get_doc(info)
                    self.docs.append(doc)
                    pending_doc = doc if doc.symbol is not None else None
                    continue
                self._accept(skip_comment=False)
                continue
            if self.tok in ("[", "'", "b"):
                raise self._error("top-level expression must be an object")
            if self.tok != "{":
                raise self._error(f"expected '{{' but got '{self.tok}'")
            expr = self._get_members_top()
            if "include" in expr:
                _check_doc_followed(pending_doc)
                self._include(expr, info)
            elif "pragma" in expr:
                _check_doc_followed(pending_doc)
                self._pragma(expr, info)
            else:
                self.exprs.append(Expr(expr, info, pending_doc))
            pending_doc = None
        _check_doc_followed(pending_doc)

    def _get_members_top(self) -> dict[str, Any]:
        return self._get_members(top=True)

    def _get_doc(self, info: SourceInfo) -> Doc:
        lines: list[tuple[int, str]] = []
        self._accept(skip_comment=False)
        while self.tok == "#":
            if self.val == "##":
                self._accept(skip_comment=False)
                return self._parse_doc(info, lines)
            text = self.val
            if text and not text.startswith(" "):
                raise QAPIError(SourceInfo(self.fname, self.line),
                                "missing space after #")
            lines.append((self.line, text[1:] if text else ""))
            self._accept(skip_comment=False)
        raise QAPIError(info, "documentation comment must end with '##'")

    def _parse_doc(self, info: SourceInfo, lines: list[tuple[int, str]]) -> Doc:
        doc = Doc(info)
        if not lines:
            return doc
        first = lines[0][1]
        if first.startswith("@"):
            if not re.fullmatch(r"@[^:\s]+:", first):
                raise QAPIError(info.at(lines[0][0]),
                                "the first line of a definition's documentation "
                                "must be '@NAME:' alone")
            doc.symbol = first[1:-1]
            lines = lines[1:]
        target: tuple[str, str] = ("body", "")
        chunks: dict[tuple[str, str], list[str]] = {("body", ""): []}
        order: list[tuple[str, str]] = [("body", "")]
        section_lines: dict[tuple[str, str], int] = {}
        in_features = False
        for lineno, text in lines:
            m = re.match(r"^@([^:\s]+):\s?(.*)$", text)
            if m and not text.startswith("  "):
                kind = "feature" if in_features else "arg"
                target = (kind, m.group(1))
                if target in chunks:
                    what = "feature" if in_features else "member"
                    doc.errors.append((lineno, f"{what} '{m.group(1)}' is documented twice"))
                chunks[target] = [m.group(2)]
                order.append(target)
                (doc.feature_lines if in_features else doc.arg_lines)[m.group(1)] = lineno
                continue
            if text.strip() == "Features:":
                in_features = True
                continue
            s = SECTION_RE.match(text)
            if s:
                in_features = False
                name = s.group(1)
                if name in ("Returns", "Errors", "Since") and \
                        any(k[1].split("#")[0] == name for k in section_lines):
                    doc.errors.append((lineno, f"duplicated '{name}' section"))
                target = ("section", f"{name}#{len(order)}")
                chunks[target] = [s.group(2)] if s.group(2) else []
                order.append(target)
                section_lines[target] = lineno
                continue
            chunks[target].append(text)
        for key in order:
            body = "\n".join(chunks[key]).strip("\n")
            kind, name = key
            if kind == "body":
                doc.body = body
            elif kind == "arg":
                doc.args[name] = _unindent(body)
            elif kind == "feature":
                doc.features[name] = _unindent(body)
            else:
                doc.sections.append(DocSection(name.split("#")[0], body,
                                               section_lines[key]))
        if doc.symbol is None and doc.errors:
            # Nothing to wait for: free-form documentation is complete.
            line, msg = doc.errors[0]
            raise QAPIError(info.at(line), msg)
        return doc

    def _include(self, expr: dict[str, Any], info: SourceInfo) -> None:
        incl = expr["include"]
        if len(expr) != 1:
            raise QAPIError(info, "'include' directive takes no other keys")
        if not isinstance(incl, str):
            raise QAPIError(info, "value of 'include' must be a string")
        path = os.path.normpath(os.path.join(os.path.dirname(self.fname), incl))
        if os.path.abspath(path) in self.seen:
            return
        sub = SchemaParser(path, self.seen, info)
        self.exprs.extend(sub.exprs)
        self.docs.extend(sub.docs)
        for k, v in sub.pragma.items():
            self.pragma.setdefault(k, v)

    def _pragma(self, expr: dict[str, Any], info: SourceInfo) -> None:
        pragma = expr["pragma"]
        if len(expr) != 1:
            raise QAPIError(info, "'pragma' directive takes no other keys")
        if not isinstance(pragma, dict):
            raise QAPIError(info, "value of 'pragma' must be an object")
        for name, value in pragma.items():
            if name in ("doc-required",):
                if not isinstance(value, bool):
                    raise QAPIError(info, f"pragma '{name}' must be boolean")
            elif name in ("command-name-exceptions", "command-returns-exceptions",
                          "member-name-exceptions"):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise QAPIError(info, f"pragma '{name}' must be a list of strings")
            else:
                raise QAPIError(info, f"unknown pragma '{name}'")
            self.pragma[name] = value


def _check_doc_followed(doc: Optional[Doc]) -> None:
    """A '@symbol:' doc block must come right before the symbol's definition."""
    if doc is not None:
        raise QAPIError(doc.info, f"documentation for '{doc.symbol}' "
                        "is not followed by the definition")


def _unindent(text: str) -> str:
    lines = text.split("\n")
    return "\n".join(line.strip() for line in lines).strip()
