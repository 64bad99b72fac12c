"""Suite discovery: duplicates, unknown names, broken files, user files, bad declarations."""

from __future__ import annotations

import pytest

from harness import Profile, Suite, SuiteDefinitionError, VariantRow, Workload, variant, variant_table
from harness.declare.registry import RegistryError, discover

GOOD = '''
from harness import Suite, Workload, variant

class {cls}(Suite):
    name = "{name}"
    grid = {{"n": [1]}}

    @variant()
    def a(self, state, params):
        return Workload(lambda: None)
'''


def test_builtin_suites_are_discovered():
    reg = discover()
    assert "attention" in reg.names()
    assert not reg.failures, [f.error for f in reg.failures]


def test_user_folder_suites_are_found(tmp_path, write_suite):
    write_suite("one", GOOD.format(cls="One", name="one"), tmp_path / "mine")
    write_suite("two", GOOD.format(cls="Two", name="two"), tmp_path / "mine")
    reg = discover(extra=[tmp_path / "mine"], builtin=False)
    assert reg.names() == ["one", "two"]


def test_duplicate_suite_names_raise(tmp_path, write_suite):
    a = write_suite("a", GOOD.format(cls="A", name="same"))
    b = write_suite("b", GOOD.format(cls="B", name="same"))
    with pytest.raises(RegistryError, match="duplicate suite name 'same'"):
        discover(extra=[a, b], builtin=False)


def test_unknown_name_suggests_close_names():
    reg = discover()
    with pytest.raises(RegistryError, match=r"unknown suite 'atention' \(did you mean 'attention'( or '\w+')*\?\)"):
        reg.get("atention")


def test_broken_suite_file_is_reported_and_others_still_load(tmp_path, write_suite):
    folder = tmp_path / "s"
    write_suite("good", GOOD.format(cls="Good", name="good"), folder)
    write_suite("broken", "import torch\nraise RuntimeError('this suite is broken')\n", folder)
    write_suite("syntax", "def oops(:\n", folder)
    reg = discover(extra=[folder], builtin=False)
    assert reg.names() == ["good"]
    errors = {f.path.split("/")[-1]: f.error for f in reg.failures}
    assert errors["broken.py"] == "RuntimeError: this suite is broken"
    assert errors["syntax.py"].startswith("SyntaxError")
    with pytest.raises(RegistryError, match="suite 'broken' failed to load: RuntimeError"):
        reg.get("broken")


def test_registry_is_frozen_after_discovery():
    reg = discover(builtin=False)

    class Late(Suite):
        name = "late"
        grid = {"n": [1]}

        @variant()
        def a(self, state, params):
            return Workload(lambda: None)

    with pytest.raises(RegistryError, match="frozen"):
        reg.add(Late, "here")


def test_declaration_errors_are_clear():
    class NoVariants(Suite):
        name = "novariants"

    with pytest.raises(SuiteDefinitionError, match="declares no variants"):
        NoVariants.validate()

    class BadProfile(Suite):
        name = "badprofile"
        grid = {"n": [1]}
        profiles = {"quick": Profile(grid={"m": [2]})}

        @variant()
        def a(self, state, params):
            return Workload(lambda: None)

    with pytest.raises(SuiteDefinitionError, match="profile 'quick' sets unknown param 'm'"):
        BadProfile.validate()

    class BadReference(Suite):
        name = "badref"
        grid = {"n": [1]}
        reference = "nope"

        @variant()
        def a(self, state, params):
            return Workload(lambda: None)

    with pytest.raises(SuiteDefinitionError, match="reference 'nope' is not a variant"):
        BadReference.validate()


def test_duplicate_variant_names_raise():
    with pytest.raises(SuiteDefinitionError, match="variant 'x' declared twice"):

        class Twice(Suite):
            @variant("x")
            def a(self, state, params):
                return Workload(lambda: None)

            @variant("x")
            def b(self, state, params):
                return Workload(lambda: None)



class Table(Suite):
    """A suite whose variants are rows of one builder, between two method variants."""

    @variant()
    def first(self, state, params):
        return Workload(lambda: "first")

    @variant_table(
        VariantRow("double", 2, description="x 2"),
        VariantRow("triple", 3, requires=("cuda",), packages=("json",), params={"k": [1, 2]}),
        VariantRow("named"),
    )
    def _scaled(self, state, params, arg):
        return Workload(lambda: (arg, params.get("k")))

    @variant()
    def last(self, state, params):
        return Workload(lambda: "last")


def test_variant_table_rows_are_variants_in_declaration_order():
    specs = Table.variants()
    assert list(specs) == ["first", "double", "triple", "named", "last"]
    triple = specs["triple"]
    assert (triple.requires, triple.packages, dict(triple.params)) == (("cuda",), ("json",), {"k": (1, 2)})
    assert specs["double"].description == "x 2" and triple.unmet("cpu") == "needs a CUDA device"
    suite = Table()
    # the runner calls a variant by its method name; a row's method passes the row's argument on
    assert getattr(suite, specs["double"].method_name)(None, {}).fn() == (2, None)
    assert getattr(suite, specs["triple"].method_name)(None, {"k": 1}).fn() == (3, 1)
    assert getattr(suite, specs["named"].method_name)(None, {}).fn() == ("named", None)
    assert Table.all_param_names() == ["k"]

    class Sub(Table):  # inherited rows stay variants; a subclass may override one, or the builder
        @variant()
        def named(self, state, params):
            return Workload(lambda: "overridden")

        def _scaled(self, state, params, arg):
            return Workload(lambda: ("sub", arg))

    assert list(Sub.variants()) == list(specs)
    assert getattr(Sub(), "named")(None, {}).fn() == "overridden"
    assert getattr(Sub(), "double")(None, {}).fn() == ("sub", 2)
    assert getattr(suite, "double")(None, {}).fn() == (2, None)


def test_variant_table_duplicates_and_clashes_raise():
    with pytest.raises(SuiteDefinitionError, match="variant 'x' declared twice"):

        class TwiceInTable(Suite):
            @variant_table(VariantRow("x", 1), VariantRow("x", 2))
            def _b(self, state, params, arg):
                return Workload(lambda: None)

    with pytest.raises(SuiteDefinitionError, match="variant 'x' declared twice"):

        class TableAndMethod(Suite):
            @variant("x")
            def a(self, state, params):
                return Workload(lambda: None)

            @variant_table(VariantRow("x"))
            def _b(self, state, params, arg):
                return Workload(lambda: None)

    with pytest.raises(SuiteDefinitionError, match="has the name of an attribute"):

        class Clash(Suite):
            @variant_table(VariantRow("prepare"))
            def _b(self, state, params, arg):
                return Workload(lambda: None)

    with pytest.raises(SuiteDefinitionError, match="takes VariantRow objects"):
        variant_table(("x", 1))


def test_spec_hash_ignores_comments_but_not_workload(tmp_path, write_suite):
    from harness.declare.registry import import_file, suites_in_module

    base = GOOD.format(cls="H", name="h")
    p1 = write_suite("h1", base)
    p2 = write_suite("h2", base.replace("class H(Suite):", "# a comment\nclass H(Suite):\n    '''Docs.'''"))
    p3 = write_suite("h3", base.replace('"n": [1]', '"n": [1, 2]'))
    h1, h2, h3 = (suites_in_module(import_file(p))[0].spec_hash() for p in (p1, p2, p3))
    assert h1 == h2
    assert h1 != h3


def test_benchmark_version_tracks_what_is_measured_not_variant_code(tmp_path):
    """Editing a variant (or a function only variants call) keeps asv's benchmark version;
    changing the grid, the inputs (prepare), a metric or the version attribute changes it."""
    from harness.declare.registry import discover

    base = '''
from harness import Metric, Profile, Suite, Workload, variant

def helper(x):
    return x + {k}

class V(Suite):
    name = "v"
    grid = {{"n": {grid}}}
    profiles = {{"quick": Profile()}}
    metrics = [Metric("err", "{unit}", "lower")]
    inputs_version = "{version}"

    def prepare(self, params, device):
        return params["n"] * {scale}

    @variant()
    def a(self, state, params):
        return Workload(lambda: helper(state) * {factor})
'''
    defaults = dict(k=1, grid=[1, 2], unit="", version="", scale=1, factor=1)

    def version(i, **changes):
        path = tmp_path / f"v{i}.py"
        path.write_text(base.format(**{**defaults, **changes}))
        return discover(extra=[path], builtin=False).get("v").benchmark_version()

    v0 = version(0)
    assert version(1, k=5) == v0 and version(2, factor=3) == v0  # implementations
    assert version(3, grid=[1, 2, 4]) != v0
    assert version(4, scale=2) != v0  # inputs
    assert version(5, unit="%") != v0
    assert version(6, version="inputs-v2") != v0
