"""Old module paths (fastseg._compat): models pickled before the package was split into stages load."""

import importlib
import pickle
import sys

from fastseg._compat import MOVED, _AliasFinder, install


def test_every_old_module_path_is_its_new_module():
    for old, new in MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new), old


def test_a_pickle_naming_an_old_module_path_loads_the_class_from_its_new_home():
    from fastseg.data.images import MaskDecoder
    from fastseg.train.transforms import SegCrop

    for cls, old in ((SegCrop, "fastseg.transforms"), (MaskDecoder, "fastseg.images")):
        data = pickle.dumps(cls, protocol=0).replace(cls.__module__.encode(), old.encode())
        assert old.encode() in data and pickle.loads(data) is cls


def test_install_adds_its_finder_once():
    install()
    install()
    assert sum(isinstance(f, _AliasFinder) for f in sys.meta_path) == 1
    assert importlib.util.find_spec("fastseg.no_such_module") is None  # only the listed paths are aliased


def test_a_folder_an_upgrade_left_behind_does_not_hide_the_old_path(tmp_path, monkeypatch):
    """git removes a moved package's files but not its __pycache__/: that folder must not win over the alias."""
    import fastseg

    (tmp_path / "demo" / "__pycache__").mkdir(parents=True)
    monkeypatch.setattr(fastseg, "__path__", [*fastseg.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "fastseg.demo", raising=False)
    importlib.invalidate_caches()
    assert importlib.import_module("fastseg.demo") is importlib.import_module("fastseg.data.demo")
