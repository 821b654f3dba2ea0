"""The VoxCeleb recipe on a mini tree in the real layout: vox1 dev/test wav trees, the flat
release, VoxCeleb2 converted to wav beside its .m4a files, meta files and official trial lists."""

import json
import shutil

import pytest
from conftest import write_recording

from speechssl.cli import main
from speechssl.corpora import CorpusError, prepare
from speechssl.data.manifests import load_cuts
from speechssl.downstream.tasks.asv import read_trials

RATE = 16000  # VoxCeleb1 wav and converted VoxCeleb2: 16 kHz mono 16-bit PCM

VOX1 = {  # path id -> official set
    "id10001/1zcIwhmdeo4/00001": "dev", "id10001/1zcIwhmdeo4/00002": "dev", "id10001/Y8hIVOBuels/00001": "dev",
    "id10002/0_laIeN-Q44/00001": "dev", "id10002/6WO410QOeuo/00001": "dev",
    "id10003/na8-QEFmj44/00003": "dev", "id10003/tCq2LcKO6xY/00002": "dev",
    "id10270/5r0dWxy17C8/00001": "test", "id10270/x6uYqmx31kE/00001": "test", "id10270/8jEAjG6SegY/00008": "test",
    "id10271/1gtz-CUIygI/00001": "test", "id10271/37nktPRUJ58/00001": "test",
}
VOX2 = {
    "id00012/21Uxsk56VDQ/00001": "dev", "id00012/21Uxsk56VDQ/00002": "dev", "id00015/0fijmz4vTVU/00001": "dev",
    "id00017/01dfn2spqyE/00001": "dev", "id00017/5MkXgwdrmJw/00003": "dev",
    "id00061/0G9G9oyFHI8/00001": "test", "id00061/3GBAnTmJ5vE/00002": "test",
}
VOX1_META = """VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet
id10001\tA.J._Buckley\tm\tIreland\tdev
id10002\tAJ_Lamas\tm\tUSA\tdev
id10003\tAamir_Khan\tm\tIndia\tdev
id10270\tEartha_Kitt\tf\tUSA\ttest
id10271\tEd_Westwick\tm\tUK\ttest
"""
VOX2_META = """VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set 
id00012 ,n000012 ,m ,dev 
id00015 ,n000015 ,m ,dev 
id00017 ,n000017 ,f ,dev 
id00061 ,n000061 ,m ,test 
"""
VERI_TEST2 = [  # VoxCeleb1-O: test speakers only
    "1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav",
    "0 id10270/x6uYqmx31kE/00001.wav id10271/1gtz-CUIygI/00001.wav",
    "1 id10271/1gtz-CUIygI/00001.wav id10271/37nktPRUJ58/00001.wav",
    "0 id10271/37nktPRUJ58/00001.wav id10270/5r0dWxy17C8/00001.wav",
]
LIST_ALL2 = [  # VoxCeleb1-E: all of VoxCeleb1
    "1 id10001/1zcIwhmdeo4/00001.wav id10001/Y8hIVOBuels/00001.wav",
    "0 id10001/1zcIwhmdeo4/00001.wav id10270/5r0dWxy17C8/00001.wav",
    "1 id10002/0_laIeN-Q44/00001.wav id10002/6WO410QOeuo/00001.wav",
    "0 id10003/na8-QEFmj44/00003.wav id10271/37nktPRUJ58/00001.wav",
]
LIST_HARD2 = [  # VoxCeleb1-H: same gender and nationality
    "1 id10001/1zcIwhmdeo4/00002.wav id10001/Y8hIVOBuels/00001.wav",
    "0 id10001/1zcIwhmdeo4/00002.wav id10002/0_laIeN-Q44/00001.wav",
]


def _seconds(i):
    return round(0.3 + 0.05 * (i % 6), 2)



def make_voxceleb(root, *, flat=False, vox2=True):
    """The mini tree; returns path id -> seconds of every wav written."""
    lengths = {}
    for i, (path_id, official) in enumerate(VOX1.items()):
        folder = "wav" if flat else f"{official}/wav"
        write_recording(root / "vox1" / folder / f"{path_id}.wav", _seconds(i), RATE, seed=i, subtype="PCM_16")
        lengths[path_id] = _seconds(i)
    (root / "vox1" / "vox1_meta.csv").write_text(VOX1_META)
    (root / "vox1" / "iden_split.txt").write_text(
        "1 id10001/1zcIwhmdeo4/00001.wav\n2 id10001/Y8hIVOBuels/00001.wav\n3 id10002/0_laIeN-Q44/00001.wav\n")
    (root / "vox1" / "veri_test2.txt").write_text("\n".join(VERI_TEST2) + "\n")
    (root / "vox1" / "list_test_all2.txt").write_text("\n".join(LIST_ALL2) + "\n")
    (root / "vox1" / "list_test_hard2.txt").write_text("\n".join(LIST_HARD2) + "\n")
    if vox2:
        for i, (path_id, official) in enumerate(VOX2.items(), start=len(VOX1)):
            wav = root / "vox2" / official / "aac" / f"{path_id}.wav"  # converted in place
            write_recording(wav, _seconds(i), RATE, seed=i, subtype="PCM_16")
            wav.with_suffix(".m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A ")  # the original AAC file
            lengths[path_id] = _seconds(i)
        # An .m4a nobody converted: not used, counted in corpus.json.
        (root / "vox2/dev/aac/id00015/0fijmz4vTVU/00002.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A ")
        (root / "vox2" / "vox2_meta.csv").write_text("\ufeff" + VOX2_META)
    return lengths


def _cuts(out, split):
    return {c.id: c for c in load_cuts(out, split)}


def test_vox1_default_splits_meta_and_official_o_trials(tmp_path):
    lengths = make_voxceleb(tmp_path / "vc")
    info = prepare("voxceleb", tmp_path / "vc", tmp_path / "out")
    train, dev, test = (_cuts(tmp_path / "out", s) for s in ("train", "dev", "test"))
    assert sorted(info["splits"]) == ["dev", "test", "train"]  # VoxCeleb2 not read by default
    assert {c.supervisions[0].speaker for c in train.values()} == {"id10001", "id10002"}
    assert set(dev) == {"id10003-na8-QEFmj44-00003", "id10003-tCq2LcKO6xY-00002"}  # the fixed hold-out
    assert info["dev_speakers"] == ["id10003"]
    assert len(train) == 5 and len(test) == 5
    cut = train["id10001-1zcIwhmdeo4-00001"]
    sup = cut.supervisions[0]
    assert sup.gender == "m" and sup.custom["nationality"] == "Ireland" and sup.custom["name"] == "A.J._Buckley"
    assert sup.custom["path_id"] == "id10001/1zcIwhmdeo4/00001" and sup.custom["set"] == "dev"
    assert sup.custom["iden_split"] == "train" and sup.custom["voxceleb"] == "vox1"
    assert test["id10270-5r0dWxy17C8-00001"].supervisions[0].gender == "f"
    for cuts in (train, dev, test):
        for c in cuts.values():
            assert c.duration == pytest.approx(lengths[c.supervisions[0].custom["path_id"]], abs=1e-4)
            assert c.recording.sampling_rate == RATE
    trials = read_trials(tmp_path / "out" / "trials" / "asv_test.tsv")
    assert trials == [(a.replace("/", "-").removesuffix(".wav"), b.replace("/", "-").removesuffix(".wav"), int(label))
                      for label, a, b in (line.split() for line in VERI_TEST2)]
    assert all(a in test and b in test for a, b, _ in trials)
    assert info["trials"]["test"] == {"count": 4, "target": 2, "dropped": 0, "file": "trials/asv_test.tsv"}
    assert not (tmp_path / "out" / "trials" / "asv_dev.tsv").exists()  # one dev speaker: no dev trials
    assert info["skipped"] == []


def test_both_versions_with_extended_and_hard_lists(tmp_path):
    make_voxceleb(tmp_path / "vc")
    # Through the CLI, as users pass options (strings).
    assert main(["prepare", "voxceleb", str(tmp_path / "vc"), "--out", str(tmp_path / "out"),
                 "--option", "versions=both", "--option", "trials=O,E,H"]) == 0
    out = tmp_path / "out"
    info = json.loads((out / "corpus.json").read_text())
    assert sorted(info["splits"]) == ["dev", "test", "train", "vox1_e", "vox1_h", "vox2_test"]
    train, dev = _cuts(out, "train"), _cuts(out, "dev")
    # id00012 hashes into the hold-out (md5 mod 1000 = 19); with 6 training speakers a second
    # one is held out (the next lowest hash, id10003), so that dev trials have non-targets.
    assert {c.supervisions[0].speaker for c in dev.values()} == {"id00012", "id10003"}
    assert info["dev_speakers"] == ["id00012", "id10003"]
    assert {c.supervisions[0].speaker for c in train.values()} == {"id10001", "id10002", "id00015", "id00017"}
    assert len(train) == 5 + 3
    dev_trials = read_trials(out / "trials" / "asv_dev.tsv")
    assert {label for *_, label in dev_trials} == {0, 1} and all(a in dev and b in dev for a, b, _ in dev_trials)
    vox2 = train["id00017-01dfn2spqyE-00001"].supervisions[0]
    assert vox2.gender == "f" and vox2.custom["voxceleb"] == "vox2" and "nationality" not in vox2.custom
    assert set(_cuts(out, "vox2_test")) == {"id00061-0G9G9oyFHI8-00001", "id00061-3GBAnTmJ5vE-00002"}
    assert info["vox2_m4a_without_wav"] == 1
    for split, lines in (("vox1_e", LIST_ALL2), ("vox1_h", LIST_HARD2)):
        cuts = _cuts(out, split)
        named = {p.removesuffix(".wav") for line in lines for p in line.split()[1:]}
        assert {c.supervisions[0].custom["path_id"] for c in cuts.values()} == named
        assert all(i.startswith(f"{split}-id1") for i in cuts)
        trials = read_trials(out / "trials" / f"asv_{split}.tsv")
        assert len(trials) == len(lines) and all(a in cuts and b in cuts for a, b, _ in trials)
        for a, b, label in trials:
            assert (cuts[a].supervisions[0].speaker == cuts[b].supervisions[0].speaker) == bool(label)
    # dev speakers are in the E list too: same audio, ids unique per directory.
    e = _cuts(out, "vox1_e")
    assert e["vox1_e-id10001-1zcIwhmdeo4-00001"].recording.id == train["id10001-1zcIwhmdeo4-00001"].recording.id
    assert len(read_trials(out / "trials" / "asv_test.tsv")) == 4


def test_vox2_only_uses_vox1_for_evaluation_and_flat_release(tmp_path):
    make_voxceleb(tmp_path / "vc", flat=True)
    info = prepare("voxceleb", tmp_path / "vc", tmp_path / "out", versions="vox2", trials="O,H")
    train = _cuts(tmp_path / "out", "train")
    assert {c.supervisions[0].speaker for c in train.values()} == {"id00015", "id00017"}
    test = _cuts(tmp_path / "out", "test")  # split of the flat vox1/wav/ tree from vox1_meta.csv's Set
    assert {c.supervisions[0].speaker for c in test.values()} == {"id10270", "id10271"} and len(test) == 5
    assert len(_cuts(tmp_path / "out", "vox1_h")) == 3 and "vox1_e" not in info["splits"]
    assert info["versions"] == ["vox2"]
    (tmp_path / "vc" / "vox1" / "vox1_meta.csv").unlink()
    with pytest.raises(CorpusError, match="missing file vox1/vox1_meta.csv .*flat vox1/wav/"):
        prepare("voxceleb", tmp_path / "vc", tmp_path / "out", versions="vox2", trials="O")


def test_m4a_only_voxceleb2_asks_for_conversion(tmp_path):
    make_voxceleb(tmp_path / "vc")
    for wav in (tmp_path / "vc" / "vox2").rglob("*.wav"):
        wav.unlink()
    with pytest.raises(CorpusError) as raised:
        prepare("voxceleb", tmp_path / "vc", tmp_path / "out", versions="vox2", trials="")
    message = str(raised.value)
    assert "only AAC: vox2/dev/aac/ (6 .m4a files)" in message
    assert "soundfile cannot read AAC (.m4a)" in message and "ffmpeg" in message


def test_partial_tree_names_everything_missing(tmp_path):
    make_voxceleb(tmp_path / "vc", vox2=False)
    shutil.rmtree(tmp_path / "vc" / "vox1" / "test")
    (tmp_path / "vc" / "vox1" / "veri_test2.txt").unlink()
    (tmp_path / "vc" / "vox1" / "list_test_hard2.txt").write_text("1 id10001/1zcIwhmdeo4/00002.wav\n")
    with pytest.raises(CorpusError) as raised:
        prepare("voxceleb", tmp_path / "vc", tmp_path / "out", versions="both", trials="O,H")
    message = str(raised.value)
    assert "no VoxCeleb1 test audio: vox1/test/wav/ missing or empty" in message
    assert "missing file vox1/veri_test2.txt (VoxCeleb1-O (cleaned) trial list" in message
    assert "missing directory vox2/ or voxceleb2/ or VoxCeleb2/" in message
    assert "vox1/list_test_hard2.txt: 1 line(s) not 'label path1 path2'" in message
    assert message.count("\n  - ") == 4
    with pytest.raises(CorpusError, match="unknown version\\(s\\) vox3"):
        prepare("voxceleb", tmp_path / "vc", tmp_path / "out", versions="vox3")
    with pytest.raises(CorpusError, match="unknown trial list\\(s\\) X"):
        prepare("voxceleb", tmp_path / "vc", tmp_path / "out", trials="O,X")


def test_unreadable_wav_is_listed_and_its_trials_dropped(tmp_path):
    make_voxceleb(tmp_path / "vc", vox2=False)
    bad = tmp_path / "vc" / "vox1" / "test" / "wav" / "id10270" / "5r0dWxy17C8" / "00001.wav"
    bad.write_bytes(b"RIFF\x00\x00")
    info = prepare("voxceleb", tmp_path / "vc", tmp_path / "out")
    assert [s["id"] for s in info["skipped"]] == ["id10270-5r0dWxy17C8-00001"]
    assert "not readable audio" in info["skipped"][0]["reason"]
    saved = json.loads((tmp_path / "out" / "corpus.json").read_text())
    assert saved["skipped"] == info["skipped"]
    assert info["trials"]["test"]["count"] == 3 and info["trials"]["test"]["dropped"] == 1
    assert len(_cuts(tmp_path / "out", "test")) == 4
