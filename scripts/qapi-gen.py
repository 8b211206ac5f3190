#!/usr/bin/env python3
"""Generates C++ and docs from the QAPI schema.

Usage: qapi-gen.py [-o DIR] [-D SYMBOL]... [--doc FILE] SCHEMA

Writes qapi-types.{hpp,cpp}, qapi-commands.{hpp,cpp}, qapi-events.{hpp,cpp}
and qapi-introspect.cpp into DIR.  A file is rewritten only when its
contents change, so a schema edit rebuilds only what it affects.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from qapi.gen_cxx import CommandsGen, EventsGen, TypesGen  # noqa: E402
from qapi.gen_doc import gen_doc  # noqa: E402
from qapi.gen_introspect import gen_introspect_cpp  # noqa: E402
from qapi.parser import QAPIError, SchemaParser  # noqa: E402
from qapi.schema import Schema  # noqa: E402


def write_if_changed(path: str, text: str) -> None:
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    except OSError:
        pass
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def load(schema_file: str, defined: set) -> Schema:
    parser = SchemaParser(schema_file)
    return Schema(parser.exprs, parser.pragma, defined)


def main() -> int:
    ap = argparse.ArgumentParser(description="QAPI schema to C++ generator")
    ap.add_argument("schema")
    ap.add_argument("-o", "--output-dir", default=".")
    ap.add_argument("-D", "--define", action="append", default=[],
                    help="configuration symbol that 'if' conditions may test")
    ap.add_argument("--doc", help="also write the Markdown QMP reference here")
    ap.add_argument("--check", action="store_true", help="only check the schema")
    ap.add_argument("--namespace", default="qapi",
                    help="C++ namespace of the generated code (default: qapi)")
    ap.add_argument("--prefix", default="",
                    help="prefix for the output file names (e.g. 'test-')")
    args = ap.parse_args()
    try:
        schema = load(args.schema, set(args.define))
        if args.check:
            return 0
        os.makedirs(args.output_dir, exist_ok=True)
        out = args.output_dir
        ns, pre = args.namespace, args.prefix

        def write(name: str, text: str) -> None:
            write_if_changed(os.path.join(out, pre + name), text)

        types = TypesGen(schema, ns)
        write("qapi-types.hpp", types.header())
        write("qapi-types.cpp", types.source(pre + "qapi-types.hpp"))
        cmds = CommandsGen(schema, ns)
        write("qapi-commands.hpp", cmds.header(pre + "qapi-types.hpp"))
        write("qapi-commands.cpp", cmds.source(pre + "qapi-commands.hpp"))
        events = EventsGen(schema, ns)
        write("qapi-events.hpp", events.header(pre + "qapi-types.hpp"))
        write("qapi-events.cpp", events.source(pre + "qapi-events.hpp"))
        write("qapi-introspect.cpp", gen_introspect_cpp(schema, ns))
        if args.doc:
            write_if_changed(args.doc, gen_doc(schema))
    except QAPIError as e:
        # One line: 'file:line: In <meta> '<name>': message'.
        print(e, file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{sys.argv[0]}: can't write '{e.filename}': {e.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
