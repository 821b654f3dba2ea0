"""Hugging Face hub ids for ``hf:`` upstreams: ``facebook/wav2vec2-base[@revision]`` -> a local snapshot.

An ``hf:`` argument names a directory when a file or directory of that name exists (relative
to the working directory), or when it is written as a path (``/...``, ``./...``, ``../...``,
``~/...``). Otherwise, if it has the form of a hub id, ``org/name`` optionally followed by
``@revision`` (a branch, tag or commit hash), it is looked up in huggingface_hub's cache:

1. in the cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, read when the upstream is built):
   no network at all when the snapshot is there with a config and complete weights;
2. otherwise, unless ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set, downloaded
   into that cache -- only ``config.json``, ``preprocessor_config.json`` and the weights
   (``model.safetensors``, its shards and index; ``pytorch_model.bin`` and its shards only
   when the repository has no safetensors);
3. otherwise one :class:`~speechssl.errors.ConfigError` line naming the id, the cache that
   was searched and the command that pre-downloads it.

The snapshot directory is then loaded exactly as a local directory is: the same checks,
and the same feature-cache identity (a hash of the files' bytes), so a new revision of a
repository gives new features, and the same weights give the same features whether they
are named by id or by directory.

Nothing here reaches the network before the upstream is built: :func:`hub_id_problem` and
:func:`is_path_like` only look at the text.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from speechssl.errors import ConfigError

CONFIG_FILES = ("config.json", "preprocessor_config.json")
WEIGHT_SETS = (
    # (single file, shard pattern, shard index), preferred first; only one set is downloaded.
    ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json"),
    ("pytorch_model.bin", "pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json"),
)
DEFAULT_ETAG_TIMEOUT = 10.0
"""Seconds to wait for the hub's first answer (``HF_HUB_ETAG_TIMEOUT`` overrides)."""

_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_REVISION = re.compile(r"[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")
_MAX_NAME = 96
_TRUE = {"1", "ON", "YES", "TRUE"}
EXAMPLE = "facebook/wav2vec2-base"


@dataclass(frozen=True)
class HubId:
    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id if self.revision is None else f"{self.repo_id}@{self.revision}"


def is_path_like(text: str) -> bool:
    """True when ``text`` is written as a filesystem path, never as a hub id."""
    return (text.startswith(("/", "~", ".")) or "\\" in text or text.endswith("/")
            or bool(re.match(r"[A-Za-z]:", text)))


def hub_id_problem(text: str) -> str | None:
    """Why ``text`` is not a hub id ``org/name[@revision]``; None when it is one."""
    repo, at, revision = text.partition("@")
    if not repo:
        return "it is empty" if not at else "there is nothing before '@'"
    slashes = repo.count("/")
    if slashes == 0:
        return f"a hub id has the form org/name (e.g. {EXAMPLE})"
    if slashes > 1:
        return f"a hub id has one '/' (org/name), {repo!r} has {slashes}"
    for part, what in zip(repo.split("/"), ("organisation", "name")):
        if not part:
            return f"its {what} is empty"
        if len(part) > _MAX_NAME:
            return f"its {what} is longer than {_MAX_NAME} characters"
        if not _PART.fullmatch(part) or "--" in part or ".." in part:
            return (f"its {what} {part!r} may only contain letters, digits, '-', '_' and '.' "
                    "(not at either end, no '--' or '..')")
    if at:
        if not revision:
            return "'@' must be followed by a revision (branch, tag or commit hash)"
        if not _REVISION.fullmatch(revision) or ".." in revision:
            return f"revision {revision!r} may only contain letters, digits, '-', '_', '.' and '/'"
    return None


def parse_hub_id(text: str) -> HubId:
    problem = hub_id_problem(text)
    if problem is not None:
        raise ConfigError(f"hf: {text!r} is not a hub id: {problem}")
    repo, at, revision = text.partition("@")
    return HubId(repo, revision if at else None)


def hub_cache_dir() -> Path:
    """huggingface_hub's cache, from the environment as it is now (its ``constants`` are read once,
    at import): ``HF_HUB_CACHE``, ``HUGGINGFACE_HUB_CACHE``, ``HF_HOME/hub``,
    ``$XDG_CACHE_HOME/huggingface/hub``, ``~/.cache/huggingface/hub``."""
    def expand(value: str) -> Path:
        return Path(os.path.expandvars(os.path.expanduser(value)))

    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return expand(os.environ[name])
    if os.environ.get("HF_HOME"):
        return expand(os.environ["HF_HOME"]) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return expand(xdg) / "huggingface" / "hub"


def offline_mode() -> bool:
    return (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").upper() in _TRUE


def download_command(hub_id: HubId) -> str:
    """The shell command that puts ``hub_id`` into the hub cache (``hf`` since huggingface_hub 0.34)."""
    import huggingface_hub

    try:
        version = tuple(int(x) for x in huggingface_hub.__version__.split(".")[:2])
    except ValueError:
        version = (1, 0)
    cli = "hf download" if version >= (0, 34) else "huggingface-cli download"
    revision = f" --revision {hub_id.revision}" if hub_id.revision else ""
    return f"{cli} {hub_id.repo_id}{revision}"


def _python_command(hub_id: HubId) -> str:
    revision = f", revision='{hub_id.revision}'" if hub_id.revision else ""
    return (f"python -c \"from huggingface_hub import snapshot_download; "
            f"snapshot_download('{hub_id.repo_id}'{revision})\"")


def _unavailable(hub_id: HubId, cache_dir: Path, reason: str) -> ConfigError:
    local = "" if hub_id.revision else f"; for a local directory of that name write ./{hub_id.repo_id}"
    return ConfigError(
        f"hf: {hub_id} is not in the Hugging Face cache ({cache_dir}) and cannot be downloaded: {reason}. "
        f"Download it once where there is network: {download_command(hub_id)} (or {_python_command(hub_id)}), "
        f"and set HF_HUB_CACHE (or HF_HOME) to that cache if it is not the default{local}"
    )


def snapshot_complete(folder: Path) -> bool:
    """A config and one complete set of weights (every shard an index names)."""
    if not (folder / CONFIG_FILES[0]).is_file():
        return False
    for single, _, index in WEIGHT_SETS:
        if (folder / single).is_file():
            return True
        if (folder / index).is_file():
            try:
                shards = set(json.loads((folder / index).read_text())["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue
            if shards and all((folder / shard).is_file() for shard in shards):
                return True
    return False


def _patterns(weights: tuple[str, ...]) -> list[str]:
    return [*CONFIG_FILES, *weights]


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = (str(exc).strip().splitlines() or [""])[0].strip()
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _cached(hub_id: HubId, cache_dir: Path) -> Path | None:
    from huggingface_hub import snapshot_download

    for weights in WEIGHT_SETS:
        try:
            folder = Path(snapshot_download(hub_id.repo_id, revision=hub_id.revision, cache_dir=str(cache_dir),
                                            local_files_only=True, allow_patterns=_patterns(weights)))
        except (OSError, ValueError):  # not cached (LocalEntryNotFoundError), incomplete, unreadable
            continue
        if snapshot_complete(folder):
            return folder
    return None


def _is_connection_error(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectionError", "TimeoutError"}) or any(
        "Connect" in name or "Timeout" in name or "Proxy" in name for name in names)


def _download_error(hub_id: HubId, cache_dir: Path, exc: Exception) -> ConfigError:
    from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, GatedRepoError):
        return ConfigError(f"hf: {hub_id.repo_id} is a gated repository: accept its conditions on "
                           f"https://huggingface.co/{hub_id.repo_id} and log in (hf auth login, or set HF_TOKEN)")
    if isinstance(exc, RevisionNotFoundError):
        return ConfigError(f"hf: {hub_id.repo_id} has no revision {hub_id.revision!r} on the hub")
    if isinstance(exc, RepositoryNotFoundError):
        local = "" if hub_id.revision else f"; for a local directory write ./{hub_id.repo_id}"
        return ConfigError(f"hf: no model {hub_id.repo_id!r} on the Hugging Face hub (or it is private: log in "
                           f"with hf auth login, or set HF_TOKEN){local}")
    if _is_connection_error(exc):
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        return _unavailable(hub_id, cache_dir, f"the hub cannot be reached ({_first_line(cause)})")
    return ConfigError(f"hf: cannot download {hub_id} from the hub: {_first_line(exc)}")


def _download(hub_id: HubId, cache_dir: Path) -> Path:
    from huggingface_hub import snapshot_download

    try:
        timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or DEFAULT_ETAG_TIMEOUT)
    except ValueError:
        timeout = DEFAULT_ETAG_TIMEOUT
    for weights in WEIGHT_SETS:  # safetensors first: pytorch_model.bin only when there are none
        try:
            folder = Path(snapshot_download(hub_id.repo_id, revision=hub_id.revision, cache_dir=str(cache_dir),
                                            allow_patterns=_patterns(weights), etag_timeout=timeout))
        except Exception as exc:  # network, authorisation, missing repository or revision, ...
            raise _download_error(hub_id, cache_dir, exc) from None
        if snapshot_complete(folder):
            return folder
    raise ConfigError(f"hf: {hub_id} on the hub has no {CONFIG_FILES[0]} with model.safetensors or "
                      "pytorch_model.bin: not a transformers model repository")


def snapshot_directory(hub_id: HubId) -> Path:
    """The local snapshot directory of ``hub_id``: from the cache, else downloaded (unless offline)."""
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise ConfigError(f"hf: {hub_id} is a hub id, which needs the huggingface_hub package "
                          "(pip install huggingface_hub); or give a local model directory") from None
    cache_dir = hub_cache_dir()
    folder = _cached(hub_id, cache_dir)
    if folder is not None:
        return folder
    if offline_mode():
        raise _unavailable(hub_id, cache_dir, "offline mode is on (HF_HUB_OFFLINE)")
    return _download(hub_id, cache_dir)


def resolve_model_dir(argument: str) -> Path:
    """The directory an ``hf:`` argument names: an existing path or a path-shaped one as it is
    (the caller reports a missing one), else a hub id's snapshot (see the module docstring)."""
    path = Path(argument).expanduser()
    if path.exists() or is_path_like(argument):
        return path
    problem = hub_id_problem(argument)
    if problem is not None:
        raise ConfigError(f"hf: {argument!r} is neither an existing model directory nor a hub id: {problem}")
    return snapshot_directory(parse_hub_id(argument))
