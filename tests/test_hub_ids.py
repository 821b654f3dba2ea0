"""``hf:<hub id>``: resolution through a fake huggingface_hub cache, offline errors, no network ever.

The cache is laid out as huggingface_hub writes it (``models--org--name/blobs/<sha256>``,
``snapshots/<commit>/<file>`` symlinks to the blobs, ``refs/<branch or tag>`` holding the
commit), in ``tmp_path``, with ``HF_HUB_CACHE`` and ``HF_HOME`` pointing there. Every test
refuses sockets and DNS; the ones that expect no network attempt also count the attempts.
"""

import hashlib
import os
import re
import socket
import time
from pathlib import Path

import pytest
import torch

from conftest import noise_batch

from speechssl.cli import main
from speechssl.errors import ConfigError
from speechssl.upstream import build_upstream, parse_spec
from speechssl.upstream import hub

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_HF = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    conv_dim=(32, 32), conv_kernel=(10, 3), conv_stride=(5, 2), conv_bias=False,
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    hidden_dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0,
    feat_extract_norm="layer",
)
EXTRACTOR = dict(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True)
COMMIT_1 = "1" * 40
COMMIT_2 = "2" * 40
REPO = "tiny-org/tiny-w2v"


def save_tiny(directory: Path, cls_name: str = "Wav2Vec2Model", *, seed: int = 0, safetensors: bool = True) -> Path:
    import transformers

    config = getattr(transformers, cls_name.replace("Model", "Config"))(**TINY_HF)
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(directory)
    if not safetensors:  # an old-style checkpoint (transformers 5 always writes safetensors)
        from safetensors.torch import load_file

        torch.save(load_file(directory / "model.safetensors"), directory / "pytorch_model.bin")
        (directory / "model.safetensors").unlink()
    transformers.Wav2Vec2FeatureExtractor(**EXTRACTOR).save_pretrained(directory)
    return directory


def add_snapshot(cache: Path, repo_id: str, source: Path, commit: str, refs=("main",)) -> Path:
    """Put ``source``'s files into ``cache`` as snapshot ``commit`` of ``repo_id``, as huggingface_hub does."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    for file in sorted(source.iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)  # no newline, as huggingface_hub writes it
    return snapshot


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub_models")
    return {
        "v1": save_tiny(root / "v1", seed=0),
        "v2": save_tiny(root / "v2", seed=1),
        "hubert": save_tiny(root / "hubert", "HubertModel", seed=2),
        "bin": save_tiny(root / "bin", seed=3, safetensors=False),
    }


@pytest.fixture
def network(monkeypatch):
    """Refuse every socket and name lookup; ``network.attempts`` counts the tries."""

    class Guard:
        attempts = 0

    def refuse(*args, **kwargs):
        Guard.attempts += 1
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return Guard


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, network, models):
    """An empty-but-for-one-repository hub cache in tmp_path, online mode, sockets refused."""
    cache = tmp_path / "hf_home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    add_snapshot(cache, REPO, models["v1"], COMMIT_1, refs=("main", "v1"))
    add_snapshot(cache, REPO, models["v2"], COMMIT_2, refs=("v2",))
    add_snapshot(cache, "tiny-org/tiny-hubert", models["hubert"], COMMIT_1)
    return cache


def features(upstream):
    waves, lengths = noise_batch((4000, 2501))
    with torch.no_grad():
        return upstream(waves, lengths)


def assert_same_features(a, b):
    out_a, out_b = features(a), features(b)
    assert out_a.lengths.tolist() == out_b.lengths.tolist()
    assert len(out_a.layers) == len(out_b.layers) == a.num_layers
    for x, y in zip(out_a.layers, out_b.layers):
        torch.testing.assert_close(x, y, atol=0, rtol=0)


# ---------------------------------------------------------------- cached ids


@pytest.mark.parametrize("offline", [False, True])
def test_cached_id_loads_like_its_snapshot_directory(hub_cache, network, models, monkeypatch, offline):
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    upstream = build_upstream(f"hf:{REPO}")
    snapshot = hub_cache / "models--tiny-org--tiny-w2v" / "snapshots" / COMMIT_1
    assert upstream.directory == snapshot
    assert upstream.name == f"hf:{REPO}"
    direct = build_upstream(f"hf:{snapshot}")
    original = build_upstream(f"hf:{models['v1']}")
    assert_same_features(upstream, direct)
    assert_same_features(upstream, original)
    # The feature-cache identity is the bytes, not the name: id, snapshot and source agree.
    assert upstream.fingerprint() == direct.fingerprint() == original.fingerprint()
    assert network.attempts == 0


def test_cached_hubert_id_loads(hub_cache, network, models):
    upstream = build_upstream("hf:tiny-org/tiny-hubert")
    assert type(upstream.model).__name__ == "HubertModel"
    assert_same_features(upstream, build_upstream(f"hf:{models['hubert']}"))
    assert network.attempts == 0


@pytest.mark.parametrize("revision", ["v2", COMMIT_2])
def test_revision_selects_another_snapshot(hub_cache, network, models, revision):
    main_rev = build_upstream(f"hf:{REPO}")
    pinned = build_upstream(f"hf:{REPO}@{revision}")
    assert pinned.directory == hub_cache / "models--tiny-org--tiny-w2v" / "snapshots" / COMMIT_2
    assert_same_features(pinned, build_upstream(f"hf:{models['v2']}"))
    # A new revision is new weights: another fingerprint, so cached features are not reused.
    assert pinned.fingerprint() != main_rev.fingerprint()
    assert build_upstream(f"hf:{REPO}@v1").fingerprint() == main_rev.fingerprint()
    assert network.attempts == 0


def test_sharded_or_partial_snapshot_is_not_taken_as_cached(hub_cache, network, models, monkeypatch):
    # A snapshot holding only config.json (as AutoConfig would leave it) is not a usable model.
    partial = hub_cache / "models--tiny-org--partial"
    (partial / "snapshots" / COMMIT_1).mkdir(parents=True)
    (partial / "refs").mkdir()
    (partial / "refs" / "main").write_text(COMMIT_1)
    (partial / "snapshots" / COMMIT_1 / "config.json").write_bytes((models["v1"] / "config.json").read_bytes())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"hf: tiny-org/partial is not in the Hugging Face cache"):
        build_upstream("hf:tiny-org/partial")
    assert network.attempts == 0


# ---------------------------------------------------------------- ids that are not cached


def _one_line_offline_error(message: str, hub_id: str, cache: Path, command: str) -> None:
    assert "\n" not in message
    assert message.startswith(f"hf: {hub_id} is not in the Hugging Face cache ({cache})")
    assert command in message
    repo = hub_id.split("@")[0]
    assert f"snapshot_download('{repo}'" in message
    assert "HF_HUB_CACHE" in message and "HF_HOME" in message
    assert "Traceback" not in message and "urllib3" not in message and "Retry" not in message


@pytest.mark.parametrize("hub_id,command", [
    ("tiny-org/not-cached", "hf download tiny-org/not-cached"),
    ("tiny-org/tiny-w2v@v3", "hf download tiny-org/tiny-w2v --revision v3"),
])
def test_uncached_id_offline_is_one_clear_error(hub_cache, network, monkeypatch, hub_id, command):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as err:
        build_upstream(f"hf:{hub_id}")
    message = str(err.value)
    _one_line_offline_error(message, hub_id, hub_cache, command)
    assert "offline mode is on (HF_HUB_OFFLINE)" in message
    assert network.attempts == 0


def test_uncached_id_without_network_fails_fast_with_the_same_error(hub_cache, network):
    started = time.monotonic()
    with pytest.raises(ConfigError) as err:
        build_upstream("hf:tiny-org/not-cached")
    elapsed = time.monotonic() - started
    message = str(err.value)
    _one_line_offline_error(message, "tiny-org/not-cached", hub_cache, "hf download tiny-org/not-cached")
    assert "the hub cannot be reached" in message
    assert network.attempts >= 1  # it did try (online mode), and the refusal became the one line
    assert elapsed < 20, f"took {elapsed:.1f} s to give up"


def test_cache_location_is_read_when_the_upstream_is_built(tmp_path, monkeypatch, network, models):
    # HF_HOME alone (no HF_HUB_CACHE), set after huggingface_hub was imported.
    import huggingface_hub  # noqa: F401

    home = tmp_path / "elsewhere"
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    assert hub.hub_cache_dir() == home / "hub"
    add_snapshot(home / "hub", REPO, models["v2"], COMMIT_2)
    upstream = build_upstream(f"hf:{REPO}")
    assert upstream.directory == home / "hub" / "models--tiny-org--tiny-w2v" / "snapshots" / COMMIT_2
    assert network.attempts == 0


# ---------------------------------------------------------------- download (a fake hub)


def _fake_hub(monkeypatch, cache: Path, remote: Path, commit: str = COMMIT_1):
    """snapshot_download that 'downloads' the files of ``remote`` its allow_patterns select."""
    import fnmatch

    import huggingface_hub
    from huggingface_hub.utils import LocalEntryNotFoundError

    calls = []

    def fake(repo_id, *, revision=None, cache_dir=None, local_files_only=False, allow_patterns=None, **kwargs):
        calls.append({"repo_id": repo_id, "local_files_only": local_files_only, "allow_patterns": list(allow_patterns),
                      "cache_dir": cache_dir})
        snapshot = Path(cache_dir) / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        snapshot.mkdir(parents=True, exist_ok=True)
        for file in remote.iterdir():
            if any(fnmatch.fnmatch(file.name, p) for p in allow_patterns) and not (snapshot / file.name).exists():
                (snapshot / file.name).write_bytes(file.read_bytes())
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    return calls


def test_download_fetches_only_config_and_safetensors(hub_cache, monkeypatch, models):
    calls = _fake_hub(monkeypatch, hub_cache, models["v2"])
    upstream = build_upstream("hf:tiny-org/fresh")
    assert [c["local_files_only"] for c in calls] == [True, True, False]
    assert calls[-1]["allow_patterns"] == ["config.json", "preprocessor_config.json", "model.safetensors",
                                           "model-*-of-*.safetensors", "model.safetensors.index.json"]
    assert all(c["cache_dir"] == str(hub_cache) for c in calls)
    assert sorted(p.name for p in upstream.directory.iterdir()) == [
        "config.json", "model.safetensors", "preprocessor_config.json"]
    assert_same_features(upstream, build_upstream(f"hf:{models['v2']}"))


def test_download_falls_back_to_pytorch_bin_only_without_safetensors(hub_cache, monkeypatch, models):
    calls = _fake_hub(monkeypatch, hub_cache, models["bin"])
    upstream = build_upstream("hf:tiny-org/old-style")
    assert [c["local_files_only"] for c in calls] == [True, True, False, False]
    assert "pytorch_model.bin" in calls[-1]["allow_patterns"]
    assert (upstream.directory / "pytorch_model.bin").is_file()
    assert upstream.fingerprint() == build_upstream(f"hf:{models['bin']}").fingerprint()


def test_hub_errors_become_one_line(hub_cache):
    from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    def bare(cls):  # these need an HTTP response to construct; the mapping only looks at the type
        exc = cls.__new__(cls)
        Exception.__init__(exc, "404 Client Error\nmore\nlines")
        return exc

    hub_id = hub.HubId("tiny-org/gone", "v9")
    assert "no model 'tiny-org/gone' on the Hugging Face hub" in str(
        hub._download_error(hub_id, hub_cache, bare(RepositoryNotFoundError)))
    assert "has no revision 'v9'" in str(hub._download_error(hub_id, hub_cache, bare(RevisionNotFoundError)))
    assert "gated repository" in str(hub._download_error(hub_id, hub_cache, bare(GatedRepoError)))
    other = str(hub._download_error(hub_id, hub_cache, RuntimeError("boom\nsecond line")))
    assert other == "hf: cannot download tiny-org/gone@v9 from the hub: RuntimeError: boom"


# ---------------------------------------------------------------- what is a path, what is an id


@pytest.mark.parametrize("argument,expected", [
    ("tiny-org/a/b", "has 2"),
    ("tiny-org/na me", "may only contain letters"),
    ("tiny-org//name", "has 2"),
    ("-org/name", "may only contain letters"),
    ("org/na--me", "no '--'"),
    ("org/name@", "'@' must be followed by a revision"),
    ("org/name@bad rev", "revision 'bad rev'"),
    ("@main", "nothing before '@'"),
    ("nosuchdir", "a hub id has the form org/name"),
])
def test_invalid_ids_fail_before_any_network(hub_cache, network, monkeypatch, argument, expected):
    import huggingface_hub

    def never(*args, **kwargs):
        raise AssertionError("the hub was consulted for an invalid id")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", never)
    assert parse_spec(f"hf:{argument}") == ("hf", argument)  # the form check stays network-free
    with pytest.raises(ConfigError) as err:
        build_upstream(f"hf:{argument}")
    message = str(err.value)
    assert message.startswith(f"hf: {argument!r} is neither an existing model directory nor a hub id")
    assert expected in message and "\n" not in message
    assert network.attempts == 0


def test_an_empty_argument_is_refused_by_the_spec_check(network):
    for spec in ("hf:", "hf:  "):
        with pytest.raises(ConfigError, match=re.escape("needs an argument: hf:<dir or hub id>")):
            parse_spec(spec)
    assert network.attempts == 0


@pytest.mark.parametrize("argument", ["./tiny-org/tiny-w2v", "../tiny-org/tiny-w2v", "/no/such/dir", "~/no-such-x/",
                                      "tiny-org/"])
def test_path_shaped_arguments_are_directories(hub_cache, network, monkeypatch, tmp_path, argument):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"hf: model directory .* does not exist"):
        build_upstream(f"hf:{argument}")
    assert network.attempts == 0


def test_an_existing_directory_wins_over_the_id(hub_cache, network, monkeypatch, tmp_path, models):
    monkeypatch.chdir(tmp_path)
    save_tiny(tmp_path / "tiny-org" / "tiny-w2v", seed=5)
    upstream = build_upstream(f"hf:{REPO}")
    assert upstream.directory == Path(REPO)
    forced = build_upstream(f"hf:./{REPO}")
    assert forced.fingerprint() == upstream.fingerprint() != build_upstream(f"hf:{models['v1']}").fingerprint()
    assert network.attempts == 0


def test_parse_hub_id():
    assert hub.parse_hub_id("facebook/wav2vec2-base") == hub.HubId("facebook/wav2vec2-base", None)
    assert hub.parse_hub_id("facebook/hubert-base-ls960@refs/pr/3") == hub.HubId("facebook/hubert-base-ls960",
                                                                                 "refs/pr/3")
    assert str(hub.HubId("a/b", "v1")) == "a/b@v1"
    with pytest.raises(ConfigError, match=re.escape("'a/b/c' is not a hub id")):
        hub.parse_hub_id("a/b/c")
    for text in ("/abs", "./rel", "~/x", "..", "a\\b", "dir/"):
        assert hub.is_path_like(text)
    assert not hub.is_path_like("facebook/wav2vec2-base")


# ---------------------------------------------------------------- the CLI


@pytest.mark.parametrize("offline", [True, False])
def test_cli_prints_one_line_and_fails(hub_cache, network, monkeypatch, tmp_path, capsys, offline):
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["bench", "--upstream", "hf:tiny-org/not-cached", "--task", "lid", "--out", str(tmp_path / "run"),
                 "--no-store", "--no-progress", "cost.energy=false"])
    err = capsys.readouterr().err
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: hf: tiny-org/not-cached is not in the Hugging Face cache")
    assert "hf download tiny-org/not-cached" in lines[0]
    assert not (tmp_path / "run" / "result.json").exists()
