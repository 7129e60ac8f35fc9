import pytest

from autoprune.errors import ConfigError
from autoprune.registry import Registry, import_callable


def test_register_and_get():
    reg = Registry("thing")

    @reg.register("one")
    def one():
        return 1

    assert reg.get("one")() == 1
    assert "one" in reg and reg.names() == ["one"]


def test_unknown_name_suggests_close_match():
    reg = Registry("thing")
    reg.add("resnet10", object())
    with pytest.raises(
        ConfigError, match=r"unknown thing 'resnet01' \(did you mean 'resnet10'\?\)"
    ):
        reg.get("resnet01")


def test_import_callable_errors_name_the_problem():
    assert import_callable("numpy:sqrt")(9.0) == 3.0
    with pytest.raises(ConfigError, match="expected 'package.module:function'"):
        import_callable("numpy.sqrt")
    with pytest.raises(ConfigError, match="cannot import module 'no_such_mod'"):
        import_callable("no_such_mod:f")
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        import_callable("numpy:nope")
    for stdlib in ("math:sqrt", "os.path:join", "builtins:print"):
        with pytest.raises(ConfigError, match="is in Python's standard library"):
            import_callable(stdlib)
