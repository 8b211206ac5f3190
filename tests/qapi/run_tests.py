#!/usr/bin/env python3
"""Tests of the QAPI schema generator, scripts/qapi-gen.py.

bad/NAME.json   must be rejected: 'qapi-gen.py --check tests/qapi/bad/NAME.json',
                run from the repository root, exits with status 1 and prints
                exactly bad/NAME.err on stderr.  The generator names files
                as it was given them, so running it from the root with paths
                relative to the root is all the normalisation the expected
                output needs.  bad/include/ holds files the cases include.
good/NAME.json  must be accepted, with no configuration symbol defined, with
                CONFIG_FOO, and with CONFIG_FOO, CONFIG_BAR and CONFIG_BAZ, and
                every output must be generated.  good/include/ holds files
                the cases include.
qapi/qapi-schema.json, the real schema, must generate every output (with
                the symbols CMakeLists.txt defines), and a second run must
                not rewrite files whose contents did not change.

Each schema is a subTest of one test method.

    python3 tests/qapi/run_tests.py [-v] [unittest options]
    python3 tests/qapi/run_tests.py --update    rewrite the .err files from
                                                what the generator prints
"""

import os
import re
import subprocess
import sys
import tempfile
import unittest
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
GENERATOR = ROOT / "scripts" / "qapi-gen.py"
REAL_SCHEMA = ROOT / "qapi" / "qapi-schema.json"

# What one run writes into the output directory (and --doc's file).
OUTPUTS = ["qapi-types.hpp", "qapi-types.cpp", "qapi-commands.hpp",
           "qapi-commands.cpp", "qapi-events.hpp", "qapi-events.cpp",
           "qapi-introspect.cpp"]
DOC = "qmp-reference.md"

# Configurations the good schemas are generated in.
GOOD_CONFIGS = [[], ["CONFIG_FOO"], ["CONFIG_FOO", "CONFIG_BAR", "CONFIG_BAZ"]]

# One line: 'file:line: message' or 'file:line: In <meta> '<name>': message'.
ERROR_LINE_RE = re.compile(
    r"tests/qapi/bad/[^:\s]+\.json:\d+: "
    r"(In (enum|struct|union|alternate|command|event) '[^']*': )?\S[^\n]*\n")

UPDATE = False


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def run_generator(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", LC_ALL="C")
    return subprocess.run([sys.executable, str(GENERATOR), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def run_generator_many(arg_lists: list) -> list:
    """Runs the generator once per argument list, a few at a time."""
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda args: run_generator(*args), arg_lists))


def defines(symbols) -> list:
    return [arg for s in symbols for arg in ("-D", s)]


def real_schema_symbols() -> list:
    """The configuration symbols the build passes (CMakeLists.txt's QAPI_DEFINES)."""
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    m = re.search(r"set\(QAPI_DEFINES\s([^)]*)\)", text)
    if m is None:
        raise AssertionError("QAPI_DEFINES not found in CMakeLists.txt")
    return re.findall(r"-D\s+(\S+)", m.group(1))


def schemas(kind: str) -> list:
    return sorted((HERE / kind).glob("*.json"))


class BadSchemas(unittest.TestCase):
    def test_bad_schemas(self):
        cases = schemas("bad")
        self.assertTrue(cases)
        procs = run_generator_many([("--check", rel(schema)) for schema in cases])
        for schema, proc in zip(cases, procs):
            with self.subTest(schema=schema.name):
                expected_file = schema.with_suffix(".err")
                if UPDATE:
                    expected_file.write_text(proc.stderr, encoding="utf-8")
                self.assertNotIn("Traceback", proc.stderr)
                self.assertEqual(proc.returncode, 1, proc.stderr)
                self.assertEqual(proc.stdout, "")
                self.assertTrue(expected_file.exists(), f"{rel(expected_file)} is missing")
                expected = expected_file.read_text(encoding="utf-8")
                self.assertEqual(proc.stderr, expected)

    def test_expected_errors_are_one_line(self):
        for err in sorted((HERE / "bad").glob("*.err")):
            with self.subTest(err=err.name):
                self.assertTrue(err.with_suffix(".json").exists(),
                                f"{rel(err)} has no schema")
                self.assertRegex(err.read_text(encoding="utf-8"),
                                 "^" + ERROR_LINE_RE.pattern + "$")


class GoodSchemas(unittest.TestCase):
    def test_good_schemas(self):
        cases = [(schema, symbols) for schema in schemas("good") for symbols in GOOD_CONFIGS]
        self.assertTrue(cases)
        with tempfile.TemporaryDirectory() as tmp:
            outs = [os.path.join(tmp, str(i)) for i in range(len(cases))]
            checks = run_generator_many([("--check", *defines(symbols), rel(schema))
                                         for schema, symbols in cases])
            gens = run_generator_many([("-o", out, "--doc", os.path.join(out, DOC),
                                        *defines(symbols), rel(schema))
                                       for (schema, symbols), out in zip(cases, outs)])
            for (schema, symbols), out, check, gen in zip(cases, outs, checks, gens):
                with self.subTest(schema=schema.name, defined=" ".join(symbols) or "none"):
                    self.assertEqual((check.returncode, check.stderr), (0, ""))
                    self.assertEqual((gen.returncode, gen.stderr), (0, ""))
                    self.assertEqual(sorted(os.listdir(out)), sorted(OUTPUTS + [DOC]))


class RealSchema(unittest.TestCase):
    def generate(self, out: str) -> None:
        proc = run_generator("-o", out, "--doc", os.path.join(out, DOC),
                             *defines(real_schema_symbols()), rel(REAL_SCHEMA))
        self.assertEqual((proc.returncode, proc.stderr), (0, ""))

    def test_generates_every_output(self):
        with tempfile.TemporaryDirectory() as out:
            self.generate(out)
            self.assertEqual(sorted(os.listdir(out)), sorted(OUTPUTS + [DOC]))
            for name in OUTPUTS + [DOC]:
                with self.subTest(output=name):
                    self.assertGreater(os.path.getsize(os.path.join(out, name)), 0)

    def test_valid_in_any_configuration(self):
        # Whether a schema is valid does not depend on the symbols defined.
        for symbols in ([], real_schema_symbols()):
            with self.subTest(defined=" ".join(symbols) or "none"):
                proc = run_generator("--check", *defines(symbols), rel(REAL_SCHEMA))
                self.assertEqual((proc.returncode, proc.stderr), (0, ""))

    def test_output_is_deterministic(self):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            self.generate(a)
            self.generate(b)
            for name in OUTPUTS + [DOC]:
                with self.subTest(output=name):
                    self.assertEqual(Path(a, name).read_bytes(), Path(b, name).read_bytes())

    def test_unchanged_files_are_not_rewritten(self):
        with tempfile.TemporaryDirectory() as out:
            self.generate(out)
            # Back-date every output: a rewrite, however quick, moves its mtime.
            old = 1_000_000_000
            for name in OUTPUTS + [DOC]:
                os.utime(os.path.join(out, name), ns=(old * 10**9, old * 10**9))
            self.generate(out)
            for name in OUTPUTS + [DOC]:
                with self.subTest(output=name):
                    self.assertEqual(os.stat(os.path.join(out, name)).st_mtime_ns, old * 10**9)
            self.assertEqual(sorted(os.listdir(out)), sorted(OUTPUTS + [DOC]))

    def test_changed_file_is_rewritten(self):
        with tempfile.TemporaryDirectory() as out:
            self.generate(out)
            old = 1_000_000_000
            for name in OUTPUTS:
                os.utime(os.path.join(out, name), ns=(old * 10**9, old * 10**9))
            target = Path(out, "qapi-events.hpp")
            good = target.read_bytes()
            target.write_bytes(good + b"// edited\n")
            os.utime(target, ns=(old * 10**9, old * 10**9))
            self.generate(out)
            self.assertEqual(target.read_bytes(), good)
            self.assertNotEqual(target.stat().st_mtime_ns, old * 10**9)
            for name in OUTPUTS:
                if name != target.name:
                    with self.subTest(output=name):
                        self.assertEqual(os.stat(os.path.join(out, name)).st_mtime_ns,
                                         old * 10**9)
            self.assertEqual(sorted(os.listdir(out)), sorted(OUTPUTS + [DOC]))


if __name__ == "__main__":
    if "--update" in sys.argv:
        sys.argv.remove("--update")
        UPDATE = True
    unittest.main(verbosity=2)
