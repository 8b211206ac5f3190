"""query-qmp-schema: its shape, its references, and libvirt-style probes.

Management stacks find out what a daemon supports by walking this schema
with paths such as "blockdev-add/arg-type/+file/filename"; a small
resolver here does the same walk, so the tests check what such a client
would conclude.
"""

import unittest

from daemon import DaemonTestCase

META_TYPES = {"builtin", "enum", "array", "object", "alternate", "command", "event"}
JSON_TYPES = {"string", "number", "int", "boolean", "null", "object", "array", "value"}
REQUIRED = {
    "builtin": {"json-type"},
    "enum": {"values"},
    "array": {"element-type"},
    "object": {"members"},
    "alternate": {"members"},
    "command": {"arg-type", "ret-type"},
    "event": {"arg-type"},
}
ALLOWED = {
    "builtin": {"json-type"},
    "enum": {"members", "values"},
    "array": {"element-type"},
    "object": {"members", "tag", "variants"},
    "alternate": {"members"},
    "command": {"arg-type", "ret-type", "allow-oob"},
    "event": {"arg-type"},
}


class SchemaPath:
    """Resolves libvirt's query-qmp-schema probe strings.

    "NAME/COMPONENT/..." starts at command or event NAME.  On a command or
    event, a component names a member of it ("arg-type", "ret-type").  On
    an object, "MEMBER" follows a member's type, "*MEMBER" only an optional
    member, "+CASE" the variant for that tag value, "$FEATURE" checks a
    feature.  On an enum, "^VALUE" checks a value.  On a built-in,
    "!JSONTYPE" checks its JSON type.  Arrays are walked through to their
    element type and alternates to any of their members, without using a
    component.  Returns the entity reached, or None.
    """

    MAX_DEPTH = 100

    def __init__(self, schema):
        self.by_name = {e["name"]: e for e in schema}

    def resolve(self, path):
        parts = path.split("/")
        start = self.by_name.get(parts[0])
        if start is None or start["meta-type"] not in ("command", "event"):
            return None
        return self._walk(start, parts[1:], 0)

    def _walk(self, cur, rest, depth):
        if depth > self.MAX_DEPTH:
            return None
        if not rest:
            return cur
        q, more = rest[0], rest[1:]
        meta = cur["meta-type"]
        if meta == "array":
            return self._walk(self.by_name[cur["element-type"]], rest, depth + 1)
        if meta == "alternate":
            for m in cur["members"]:
                found = self._walk(self.by_name[m["type"]], rest, depth + 1)
                if found is not None:
                    return found
            return None
        if q.startswith("$"):
            return cur if q[1:] in cur.get("features", []) and not more else None
        if meta in ("command", "event"):
            t = cur.get(q)
            return self._walk(self.by_name[t], more, depth + 1) if isinstance(t, str) else None
        if meta == "object":
            if q[:1] in ("^", "!"):
                return None
            if q.startswith("+"):
                for v in cur.get("variants", []):
                    if v["case"] == q[1:]:
                        return self._walk(self.by_name[v["type"]], more, depth + 1)
                return None
            optional_only = q.startswith("*")
            name = q[1:] if optional_only else q
            for m in cur["members"]:
                if m["name"] == name:
                    if optional_only and "default" not in m:
                        return None
                    return self._walk(self.by_name[m["type"]], more, depth + 1)
            return None
        if meta == "enum":
            return cur if q.startswith("^") and q[1:] in cur["values"] and not more else None
        if meta == "builtin":
            return cur if q.startswith("!") and q[1:] == cur["json-type"] and not more else None
        return None


class Introspection(DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.c = self.qmp()
        self.schema = self.c.ok("query-qmp-schema")
        self.by_name = {e["name"]: e for e in self.schema}
        self.paths = SchemaPath(self.schema)

    def entity(self, name):
        return self.by_name[name]

    def test_every_entry_has_name_and_meta_type(self):
        self.assertGreater(len(self.schema), 10)
        for e in self.schema:
            with self.subTest(e=e):
                self.assertIsInstance(e.get("name"), str)
                self.assertIn(e.get("meta-type"), META_TYPES)
                keys = set(e) - {"name", "meta-type", "features"}
                self.assertTrue(REQUIRED[e["meta-type"]] <= keys)
                self.assertTrue(keys <= ALLOWED[e["meta-type"]], keys)
                if "features" in e:
                    self.assertTrue(all(isinstance(f, str) for f in e["features"]))

    def test_names_are_unique(self):
        names = [e["name"] for e in self.schema]
        self.assertEqual(len(names), len(set(names)))

    def test_type_names(self):
        for e in self.schema:
            meta, name = e["meta-type"], e["name"]
            with self.subTest(name=name):
                if meta == "builtin":
                    self.assertIn(e["json-type"], JSON_TYPES)
                    self.assertFalse(name.isdigit())
                elif meta == "array":
                    self.assertEqual(name, "[%s]" % e["element-type"])
                elif meta in ("enum", "object", "alternate"):
                    self.assertRegex(name, r"^[0-9]+$")

    def test_references_exist(self):
        def ref(t, where):
            self.assertIn(t, self.by_name, "%s refers to missing type %r" % (where, t))

        for e in self.schema:
            meta, name = e["meta-type"], e["name"]
            if meta in ("command", "event"):
                ref(e["arg-type"], name)
                self.assertEqual(self.entity(e["arg-type"])["meta-type"], "object", name)
                if meta == "command":
                    ref(e["ret-type"], name)
            elif meta == "array":
                ref(e["element-type"], name)
            elif meta == "alternate":
                self.assertGreaterEqual(len(e["members"]), 1)
                for m in e["members"]:
                    ref(m["type"], name)
            elif meta == "object":
                for m in e["members"]:
                    self.assertIsInstance(m["name"], str)
                    ref(m["type"], name + "." + m["name"])
                for v in e.get("variants", []):
                    ref(v["type"], name + "+" + v["case"])
                    self.assertEqual(self.entity(v["type"])["meta-type"], "object")

    def test_every_type_is_reachable_from_a_command_or_event(self):
        seen, todo = set(), [e["name"] for e in self.schema
                            if e["meta-type"] in ("command", "event")]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            e = self.entity(name)
            for k in ("arg-type", "ret-type", "element-type"):
                if k in e:
                    todo.append(e[k])
            if e["meta-type"] in ("object", "alternate"):
                todo += [m["type"] for m in e["members"]]
            todo += [v["type"] for v in e.get("variants", [])]
        self.assertEqual(set(self.by_name) - seen, set())

    def test_enums(self):
        for e in self.schema:
            if e["meta-type"] != "enum":
                continue
            with self.subTest(name=e["name"]):
                self.assertEqual(len(e["values"]), len(set(e["values"])))
                if "members" in e:
                    self.assertEqual([m["name"] for m in e["members"]], e["values"])

    def test_unions(self):
        for e in self.schema:
            if e["meta-type"] != "object" or "tag" not in e:
                continue
            with self.subTest(name=e["name"]):
                tag = [m for m in e["members"] if m["name"] == e["tag"]]
                self.assertEqual(len(tag), 1)
                values = self.entity(tag[0]["type"])["values"]
                for v in e["variants"]:
                    self.assertIn(v["case"], values)

    def test_allow_oob_exactly_on_yank_and_query_yank(self):
        oob = set()
        for e in self.schema:
            if e["meta-type"] == "command" and "allow-oob" in e:
                self.assertIs(e["allow-oob"], True, e["name"])
                oob.add(e["name"])
        self.assertEqual(oob, {"yank", "query-yank"})

    def test_shutdown_event(self):
        ev = self.entity("SHUTDOWN")
        self.assertEqual(ev["meta-type"], "event")
        args = self.entity(ev["arg-type"])
        members = {m["name"]: m for m in args["members"]}
        self.assertEqual(set(members), {"guest", "reason"})
        self.assertNotIn("default", members["guest"])
        self.assertNotIn("default", members["reason"])
        self.assertEqual(members["guest"]["type"], "bool")
        self.assertEqual(self.entity("bool"), {"name": "bool", "meta-type": "builtin",
                                               "json-type": "boolean"})
        reason = self.entity(members["reason"]["type"])
        self.assertEqual(reason["meta-type"], "enum")
        self.assertIn("host-qmp-quit", reason["values"])
        self.assertIn("host-signal", reason["values"])

    def test_optional_members_have_default_null(self):
        add_fd = self.entity(self.entity("add-fd")["arg-type"])
        members = {m["name"]: m for m in add_fd["members"]}
        self.assertEqual(set(members), {"fdset-id", "opaque"})
        for m in members.values():
            self.assertIn("default", m)
            self.assertIsNone(m["default"])
        getfd = self.entity(self.entity("getfd")["arg-type"])
        self.assertEqual(getfd["members"], [{"name": "fdname", "type": "str"}])
        # Everywhere: 'default' is either absent or null.
        for e in self.schema:
            if e["meta-type"] == "object":
                for m in e["members"]:
                    if "default" in m:
                        self.assertIsNone(m["default"], (e["name"], m))

    def test_commands_without_arguments_or_return(self):
        qv = self.entity("query-version")
        self.assertEqual(self.entity(qv["arg-type"])["members"], [])
        quit = self.entity("quit")
        self.assertEqual(self.entity(quit["ret-type"]), {"name": quit["ret-type"],
                                                          "meta-type": "object", "members": []})

    def test_probe_paths_that_resolve(self):
        good = [
            "yank/arg-type/instances/+chardev/id",
            "yank/arg-type/instances/+block-node/node-name",
            "yank/arg-type/instances/type/^chardev",
            "qmp_capabilities/arg-type/enable/^oob",
            "qmp_capabilities/arg-type/*enable",
            "SHUTDOWN/arg-type/reason/^host-qmp-quit",
            "SHUTDOWN/arg-type/guest/!boolean",
            "add-fd/arg-type/*fdset-id/!int",
            "add-fd/arg-type/opaque/!string",
            "add-fd/ret-type/fdset-id",
            "remove-fd/arg-type/fd",
            "query-version/ret-type/qemu/major/!int",
            "query-version/ret-type/package",
            "query-yank/ret-type/+chardev/id",
            "query-fdsets/ret-type/fds/opaque",
            "query-qmp-schema/ret-type/+command/allow-oob",
            "query-qmp-schema/ret-type/meta-type/^event",
            "getfd/arg-type/fdname",
            "query-commands/ret-type/name",
        ]
        for p in good:
            with self.subTest(path=p):
                self.assertIsNotNone(self.paths.resolve(p))

    def test_probe_paths_that_do_not_resolve(self):
        bad = [
            "nope",
            "nope/arg-type",
            "yank/arg-type/instances/+bogus",
            "yank/arg-type/instances/+chardev/node-name",
            "yank/arg-type/instances/type/^bogus",
            "qmp_capabilities/arg-type/enable/^bogus",
            "qmp_capabilities/arg-type/bogus",
            "getfd/arg-type/*fdname",
            "SHUTDOWN/arg-type/guest/!string",
            "SHUTDOWN/ret-type",
            "query-version/ret-type/qemu/nano",
            "add-fd/bogus-type",
            "str",  # a type, not a command or event
        ]
        for p in bad:
            with self.subTest(path=p):
                self.assertIsNone(self.paths.resolve(p))

    def test_resolver_reaches_the_right_entity(self):
        e = self.paths.resolve("yank/arg-type/instances/+chardev/id")
        self.assertEqual(e, {"name": "str", "meta-type": "builtin", "json-type": "string"})
        e = self.paths.resolve("SHUTDOWN/arg-type/reason")
        self.assertEqual(e["meta-type"], "enum")
        e = self.paths.resolve("query-yank/ret-type")
        self.assertEqual(e["meta-type"], "array")

    def test_schema_is_stable_across_calls_and_connections(self):
        again = self.c.ok("query-qmp-schema")
        self.assertEqual(again, self.schema)

    def test_schema_is_available_on_oob_monitor_too(self):
        self.c.close()  # the chardev serves one client at a time
        c = self.qmp(oob=True)
        self.assertEqual(c.ok("query-qmp-schema"), self.schema)


if __name__ == "__main__":
    unittest.main()
