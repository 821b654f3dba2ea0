"""Every bad input the issue names gets a clear error naming the file, or a reported skip."""

import numpy as np
import pytest
import soundfile as sf

from speechssl.data.audio import load_audio, load_cut_audio, resample, scan_cuts
from speechssl.errors import AudioError


def _tone(seconds: float, sr: int, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture()
def good_flac(tmp_path):
    path = tmp_path / "good.flac"
    sf.write(path, _tone(2.0, 16000), 16000)
    return path


def test_good_flac_roundtrip(good_flac):
    wave = load_audio(good_flac)
    assert wave.dtype == np.float32 and wave.shape == (32000,)
    np.testing.assert_allclose(wave, _tone(2.0, 16000), atol=1e-4)


def test_offset_and_duration(good_flac):
    assert load_audio(good_flac, offset=0.5, duration=1.0).shape == (16000,)


def test_8khz_wav_is_resampled(tmp_path):
    path = tmp_path / "narrow.wav"
    sf.write(path, _tone(1.0, 8000), 8000)
    wave = load_audio(path)
    assert wave.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 16000 / len(wave) - 220.0) < 2.0  # pitch preserved


def test_stereo_44k_ogg_is_mixed_down_and_resampled(tmp_path):
    path = tmp_path / "stereo.ogg"
    stereo = np.stack([_tone(1.0, 44100, 300.0), _tone(1.0, 44100, 500.0)], axis=1)
    sf.write(path, stereo, 44100, format="OGG", subtype="VORBIS")
    wave = load_audio(path)
    assert wave.ndim == 1 and abs(wave.shape[0] - 16000) <= 1


def test_stereo_channels_are_averaged(tmp_path):
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([np.full(16000, 0.5), np.full(16000, -0.1)], axis=1).astype(np.float32), 16000,
             subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), 0.2, atol=1e-6)


def test_resample_ratio():
    assert resample(np.zeros(22050, np.float32), 22050, 16000).shape == (16000,)


@pytest.mark.parametrize(
    "name, make, reason",
    [
        ("missing.wav", None, "file not found"),
        ("zero.wav", lambda p: p.write_bytes(b""), "empty"),
        ("text.wav", lambda p: p.write_text("this is not audio at all"), "not a readable audio file"),
        ("short.wav", lambda p: sf.write(p, _tone(0.05, 16000), 16000), "too short"),
        ("nan.wav", lambda p: sf.write(p, np.full(8000, np.nan, np.float32), 16000, subtype="FLOAT"), "NaN"),
    ],
)
def test_bad_inputs_raise_naming_the_file(tmp_path, name, make, reason):
    path = tmp_path / name
    if make:
        make(path)
    with pytest.raises(AudioError, match=reason) as info:
        load_audio(path)
    assert str(path) in str(info.value)


def test_truncated_flac(tmp_path, good_flac):
    data = good_flac.read_bytes()
    path = tmp_path / "truncated.flac"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="truncated|corrupt") as info:
        load_audio(path)
    assert "truncated.flac" in str(info.value)


def _cut_for(path):
    from lhotse import Recording

    rec = Recording.from_file(path)
    return rec.to_cut()


def test_scan_skips_bad_files_and_lists_them(tmp_path, good_flac):
    short = tmp_path / "short.wav"
    sf.write(short, _tone(0.05, 16000), 16000)
    cuts = [_cut_for(good_flac), _cut_for(short)]
    with pytest.raises(AudioError, match="short.wav"):
        scan_cuts(cuts, skip_bad=False)
    report = scan_cuts(cuts, skip_bad=True)
    assert [c.id for c in report.good] == [cuts[0].id]
    assert len(report.bad) == 1 and "short.wav" in report.bad[0][1]
    assert "1 skipped" in report.summary() and "short.wav" in report.summary()


def test_load_cut_audio_uses_cut_window(good_flac):
    cut = _cut_for(good_flac).truncate(offset=0.5, duration=1.0)
    assert load_cut_audio(cut).shape == (16000,)
