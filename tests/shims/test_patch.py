from __future__ import annotations

import types

from ckptkit.shims._patch import Patches, temporarily


class Base:
    @classmethod
    def from_pretrained(cls, path):
        return ("base", cls.__name__, path)


class Model(Base):
    @staticmethod
    def helper():
        return "upstream"


def test_patches_restore_raw_entries_and_inherited_methods():
    module = types.SimpleNamespace(load=lambda: "upstream")
    module_dict_load = module.load
    helper = vars(Model)["helper"]

    def ours(cls, path):
        return ("ours", cls.__name__, path)

    patches = Patches("demo")
    targets = [
        (Model, "from_pretrained", classmethod(ours)),  # inherited: set on Model, deleted afterwards
        (Model, "helper", staticmethod(lambda: "ours")),
        (module, "load", lambda: "ours"),
    ]
    patches.install(lambda: targets)
    patches.install(lambda: [(module, "load", lambda: "twice")])  # a no-op while installed
    assert patches.installed
    assert Model.from_pretrained("p") == ("ours", "Model", "p")
    assert Base.from_pretrained("p") == ("base", "Base", "p")
    assert Model.helper() == "ours" and module.load() == "ours"
    patches.uninstall()
    assert not patches.installed
    assert "from_pretrained" not in vars(Model)
    assert Model.from_pretrained("p") == ("base", "Model", "p")
    assert vars(Model)["helper"] is helper
    assert module.load is module_dict_load


def test_temporarily_restores_after_an_error():
    module = types.SimpleNamespace(load=lambda: "upstream")
    original = module.load
    try:
        with temporarily(module, "load", lambda: "ours"):
            assert module.load() == "ours"
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert module.load is original
