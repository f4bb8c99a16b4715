import hashlib
import os
import sys

import pytest

from ttscale.engines import models
from ttscale.engines.models import ModelError, ModelSpec, model_path, resolve


@pytest.fixture
def tiny_model(tmp_path, monkeypatch):
    """A registered 'model' of three chunk packages on sys.path, cache in tmp_path."""
    blob = b"GGUF" + bytes(range(256)) * 40
    parts = [blob[:3000], blob[3000:7000], blob[7000:]]
    site = tmp_path / "site"
    for k, part in enumerate(parts, start=1):
        pkg = site / f"tiny_chunk_part{k}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{k:02d}.bin").write_bytes(part)
    monkeypatch.syspath_prepend(str(site))
    spec = ModelSpec(
        name="tiny",
        description="test model",
        chunk_packages=tuple(f"tiny_chunk_part{k}" for k in (1, 2, 3)),
        size=len(blob),
        sha256=hashlib.sha256(blob).hexdigest(),
        install_hint="pip install tiny-chunks",
    )
    monkeypatch.setitem(models.REGISTRY, "tiny", spec)
    monkeypatch.setenv("TTSCALE_CACHE", str(tmp_path / "cache"))
    yield spec, blob, site
    for k in (1, 2, 3):
        sys.modules.pop(f"tiny_chunk_part{k}", None)


def test_assembles_verifies_and_reuses(tiny_model):
    spec, blob, _ = tiny_model
    p = model_path("tiny")
    assert p.read_bytes() == blob
    assert p.with_suffix(".verified").exists()
    assert model_path("tiny") == p
    assert resolve("tiny") == (p, spec)


def test_corrupt_cached_file_is_rebuilt_never_loaded(tiny_model):
    _, blob, _ = tiny_model
    p = model_path("tiny")
    p.write_bytes(b"GGUF" + b"\0" * (len(blob) - 4))  # same size, wrong content, new mtime
    os.utime(p, ns=(1, 1))
    assert model_path("tiny").read_bytes() == blob


def test_corrupt_chunk_gives_a_clear_error(tiny_model):
    _, _, site = tiny_model
    (site / "tiny_chunk_part2" / "data" / "part02.bin").write_bytes(b"x" * 4000)
    with pytest.raises(ModelError, match="corrupt.*pip install tiny-chunks"):
        model_path("tiny")
    assert not list((models.cache_dir()).glob("*.tmp*"))


def test_missing_chunk_package_says_how_to_get_it(tiny_model, monkeypatch):
    spec, _, _ = tiny_model
    monkeypatch.setitem(models.REGISTRY, "tiny", ModelSpec(**{**spec.__dict__, "chunk_packages": ("no_such_pkg_x",)}))
    with pytest.raises(ModelError, match="not installed.*pip install tiny-chunks"):
        model_path("tiny")


def test_paths_and_unknown_names(tmp_path):
    with pytest.raises(ModelError, match="unknown model"):
        resolve("gpt-17")
    with pytest.raises(ModelError, match="does not exist"):
        resolve(str(tmp_path / "nope.gguf"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf")
    with pytest.raises(ModelError, match="not a GGUF"):
        resolve(str(bad))


def test_default_model_is_registered_with_its_checksum():
    spec = models.get_spec(models.DEFAULT_MODEL)
    assert spec.size == 491_400_064
    assert spec.sha256.startswith("1d9614638d18")
    assert spec.sampling.temperature == 0.7 and spec.sampling.top_k == 20


def test_a_corrupted_file_with_its_mtime_restored_is_verified_again(tiny_model):
    spec, blob, _ = tiny_model
    p = model_path("tiny")
    st = p.stat()
    p.write_bytes(b"GGUF" + b"\1" * (len(blob) - 4))  # same size, other content
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime back
    again = model_path("tiny")  # the stamp no longer matches: hashed, found corrupt, rebuilt
    assert hashlib.sha256(again.read_bytes()).hexdigest() == spec.sha256


def test_a_killed_assembly_leaves_nothing_behind_for_long(tiny_model):
    p = model_path("tiny")
    stale = p.with_suffix(".tmp999999")  # no such process
    stale.write_bytes(b"half a model")
    p.unlink()
    model_path("tiny")
    assert not stale.exists()


def test_an_unusable_cache_is_a_clear_error(tiny_model, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("TTSCALE_CACHE", str(blocker / "cache"))
    with pytest.raises(ModelError, match="cannot use the model cache .*TTSCALE_CACHE"):
        model_path("tiny")
