"""The CLI contract: --help everywhere, exit codes 0/1/2, one-line errors unless --debug."""

import shutil
import subprocess
import sys

import pytest

from speechssl.cli import build_parser, main


def _verb_paths(parser, prefix=()):
    """Every (sub)command path of the parser, e.g. ('corpus', 'synth')."""
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield prefix + (name,)
                yield from _verb_paths(sub, prefix + (name,))


@pytest.mark.parametrize("path", [()] + list(_verb_paths(build_parser())), ids=lambda p: " ".join(p) or "top")
def test_help_everywhere(path, capsys):
    with pytest.raises(SystemExit) as info:
        main([*path, "--help"])
    assert info.value.code == 0
    assert "usage: speechssl" in capsys.readouterr().out


def test_console_script_runs():
    exe = shutil.which("speechssl") or str(__import__("pathlib").Path(sys.executable).parent / "speechssl")
    done = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and "speechssl" in done.stdout


def test_unknown_verb_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fly"])
    assert info.value.code == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["corpus", "synth", "--hours", "-1"], "hours: must be"),
        (["corpus", "synth", "hour=1"], "did you mean 'hours'"),
        (["corpus", "synth", "--languages", "en,xx"], "xx"),
        (["demo", "batch_seconds=-5"], "batch_seconds: must be > 0"),
        (["demo", "corpus.hourz=1"], "did you mean 'corpus.hours'"),
    ],
)
def test_config_errors_exit_2_with_one_line(tmp_path, capsys, argv, message):
    argv = argv + ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out" / "corpus.json").exists()  # validated before any work


def test_runtime_error_exits_1_and_debug_shows_traceback(tmp_path, capsys):
    assert main(["corpus", "check", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no manifests found" in err
    assert main(["--debug", "corpus", "check", str(tmp_path / "missing")]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main(["corpus", "check", str(tmp_path / "missing"), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_check_corpus_and_skip_bad(tiny_corpus, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    assert main(["corpus", "check", str(corpus), "--split", "dev"]) == 0
    assert "all audio files decoded cleanly" in capsys.readouterr().out

    victim = sorted((corpus / "audio" / "dev").rglob("*.flac"))[0]
    victim.write_bytes(victim.read_bytes()[:200])  # truncate one file
    assert main(["corpus", "check", str(corpus), "--split", "dev"]) == 1
    err = capsys.readouterr().err
    assert victim.name in err and len(err.strip().splitlines()) == 1

    assert main(["corpus", "check", str(corpus), "--split", "dev", "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 unusable audio file(s)" in out and victim.name in out


def test_bench_help_names_every_task(capsys):
    from speechssl.downstream.tasks import TASKS

    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    listed = help_text.split("--task TASK")[-1].split("--probe", 1)[0]
    assert set(TASKS) == {name.strip() for name in listed.split("(")[0].split("|")}
