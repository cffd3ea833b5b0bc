"""Terminal text: nothing the plain-text side prints can drive the terminal.

Every CLI command runs as a real process with names, paths, prompts and data
full of control bytes and lone surrogates (argv given as bytes, as a shell
passes them), and no C0/C1 control character, DEL or undecodable byte may
reach its stdout or stderr: each shows as a visible escape (``\\x1b``).
"""
from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tui_trainer.run.console import ConsoleSink
from tui_trainer.records import RunEnd, RunStart, Sample
from tui_trainer.terminal import CONTROLS, PrintableStream, printable, printable_streams
from tui_trainer.ui.safe import plain

REPO = Path(__file__).resolve().parents[1]
TINY = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--context-length", "16", "--batch-size", "4",
        "--eval-batches", "1", "--sample-tokens", "24", "--warmup-steps", "1", "--threads", "1"]
# Characters that drive a terminal (OSC 52 clipboard, title, reset, CSI as one C1 byte) and bytes
# that are not UTF-8 (they reach Python's argv as lone surrogates, \udc9b and so on).
NASTY = ["\x1b]52;c;aGk=\x07", "\x1b]0;PWNED\x07", "\x1bc", "\x1b[2J", "\x9b31m", "\x07", "\r", "\x08",
         "\x7f", "\x85", "\t", "\n", "\udce9", "\udc9b", "\udcff", "é", "⏎"]
PLAIN = ["run", "a", "b-1", "x.y", "_"]


def env(encoding: str = "utf-8") -> dict[str, str]:
    e = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
             LC_ALL="C.UTF-8", PYTHONIOENCODING=encoding)
    e.pop("COLUMNS", None)
    return e


def nasty(rng: random.Random, pieces: int = 4) -> str:
    """A name made of plain parts and terminal-driving ones (never empty, never a NUL)."""
    return "".join(rng.choice(PLAIN if i % 2 else NASTY) for i in range(pieces)) + rng.choice(PLAIN)


def argv_bytes(args: list[str | Path]) -> list[bytes]:
    return [os.fsencode(a) for a in args]  # a lone surrogate \udcXX is the raw byte XX again


def unsafe(data: bytes, encoding: str) -> list[str]:
    """What in ``data`` would drive a terminal: C0 (tab and newline aside), DEL and C1 controls, and bytes
    that do not decode (a UTF-8 terminal would take a raw 0x9b as CSI)."""
    if encoding != "utf-8":  # one byte a character: the bytes themselves
        return [hex(b) for b in data if b in CONTROLS]
    text = data.decode("utf-8", "surrogateescape")
    return [hex(ord(c)) for c in text if ord(c) in CONTROLS or 0xD800 <= ord(c) < 0xE000]


def cli(args: list[str | Path], cwd: Path, encoding: str = "utf-8", timeout: float = 120,
        ) -> subprocess.CompletedProcess:
    """Run ``tui-trainer ARGS`` and check that nothing it printed can drive a terminal."""
    p = subprocess.run([os.fsencode(sys.executable), b"-m", b"tui_trainer", *argv_bytes(args)], cwd=cwd,
                       env=env(encoding), stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    for name, data in (("stdout", p.stdout), ("stderr", p.stderr)):
        assert not unsafe(data, encoding), f"{args!r}: control characters on {name}: {data[-2000:]!r}"
    return p


def wait_for(pred, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert proc.poll() is None, f"the run ended early (exit {proc.returncode})"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """One real tiny run trained on a byte corpus full of escape sequences, in a folder whose name
    holds control bytes and an undecodable byte; its prompt and name hold escapes too.  While it
    goes, ``attach --sample`` and ``--set`` are sent escapes; then it is stopped over its socket."""
    root = tmp_path_factory.mktemp("tt")
    rng = random.Random(20)
    corpus = b"".join(rng.choice([b"\x1b]0;T\x07", b"\x1bc", b"\x9b", b"\x1b[31m", b"\r", b"ab ", b"\x85"])
                      for _ in range(4000))
    (root / "evil.txt").write_bytes(corpus)
    run = root / "run\x1b]0;T\x07\udce9"
    args = ["train", "--headless", "--steps", "100000", "--eval-every", "2", "--data", "evil.txt", "--out", run,
            "--name", "n\x1b[5m\udc9b", "--sample-prompt", "\x1bc", *TINY]
    with open(root / "out", "wb") as out_f, open(root / "err", "wb") as err_f:
        proc = subprocess.Popen([os.fsencode(sys.executable), b"-m", b"tui_trainer", *argv_bytes(args)],
                                cwd=root, env=env(), stdin=subprocess.DEVNULL, stdout=out_f, stderr=err_f)
    try:
        wait_for(lambda: (run / "control.sock").exists(), proc, "the control socket")
        p = cli(["attach", run, "--sample", "\x1b]52;c;aGk=\x07\x9b", "--tokens", "16"], root)
        assert p.returncode == 0 and p.stdout.startswith(b"\\x1b]52;c;aGk=\\x07\\x9b"), p
        cli(["attach", run, "--set", "lr_scale=\x1b[31m"], root)
        cli(["attach", run, "--set", "\x1bc=1\udcff"], root)
        cli(["attach", run, "--send", "stop"], root)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out, err = (root / "out").read_bytes(), (root / "err").read_bytes()
    assert not unsafe(out, "utf-8") and not unsafe(err, "utf-8"), (out[-2000:], err[-2000:])
    text = out.decode()
    # the samples are there, their escapes visible; the folder is named, its bad bytes visible
    assert "sample    2 | \\x1bc" in text and "\\x1b]0;T\\x07\\udce9" in text, text[-3000:]
    assert "sample" in text and "(requested) | \\x1b]52;c;aGk=\\x07\\x9b" in text
    return root, run


def test_a_byte_models_samples_hold_escapes(work):
    root, run = work
    log = (run / "losses.jsonl").read_text(encoding="utf-8", errors="surrogateescape")
    assert "\\u001b" in log  # the samples really hold escapes (JSON writes them \u001b)


# One command line each, from names drawn by ``nasty``; RUN is the trained run, NEW a fresh nasty name.
COMMANDS = [
    ["export", "NEW", "-o", "x.csv"],                       # missing input
    ["export", "RUN", "-o", "-", "--records"],              # CSV of escape-laden samples to stdout
    ["export", "RUN", "-o", "NEW.csv"],                     # a file named with escapes: "wrote ... to NEW.csv"
    ["export", "RUN", "-o", "NEW"],                         # a bad suffix, echoed
    ["export", "RUN", "-o", "NEW/x.csv"],                   # a folder that does not exist
    ["view", "NEW"],
    ["view", "RUN"],                                        # no terminal: one line naming RUN
    ["view", "NEW", "--follow"],
    ["attach", "NEW", "--send", "status"],
    ["attach", "RUN", "--sample", "NEW"],                   # the run has ended
    ["attach", "RUN", "--set", "NEW=1"],
    ["attach", "RUN"],
    ["run", "--", "NEW", "NEW"],                            # no terminal: the command echoed
    ["--NEW"],                                              # argparse
    ["export", "NEW", "NEW", "-o", "NEW.png"],
]


def fill(template: list[str], run: Path, rng: random.Random) -> list[str]:
    out = []
    for a in template:
        if "NEW" in a:
            a = a.replace("NEW", nasty(rng))
        out.append(a.replace("RUN", str(run)) if a.startswith("RUN") else a)
    return out


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, len(COMMANDS) - 1), seed=st.integers(0, 2**32 - 1),
       encoding=st.sampled_from(["utf-8", "utf-8", "ascii", "latin-1"]))
def test_every_command_prints_no_control_characters(work, which, seed, encoding):
    root, run = work
    args = fill(COMMANDS[which], run, random.Random(seed))
    p = cli(args, root, encoding)
    if p.returncode:  # refused: one line, whatever newlines the names held
        assert p.stderr.startswith(b"error: ") and p.stderr.count(b"\n") == 1, p.stderr


@pytest.mark.parametrize("template", COMMANDS, ids=lambda t: " ".join(t)[:40])
def test_each_command_once(work, template):
    """Every command at least once, whatever hypothesis drew."""
    root, run = work
    p = cli(fill(template, run, random.Random(1)), root)
    if template[:3] == ["export", "RUN", "-o"] and template[3] == "-":
        assert p.returncode == 0 and b"\\x1b" in p.stdout  # the samples' escapes, visible
    if p.returncode:  # refused: one line, whatever newlines the names held
        assert p.stderr.startswith(b"error: ") and p.stderr.count(b"\n") == 1, p.stderr


@pytest.mark.parametrize("args", [
    ["train", "--headless", "--resume", "NEW"],                                   # nothing to resume
    ["train", "--headless", "--data", "NEW", "--name", "NEW", "--sample-prompt", "NEW", "--steps", "2"],
])
def test_train_errors_print_no_control_characters(work, args):
    root, run = work
    p = cli(fill(args, run, random.Random(7)), root)
    assert p.returncode != 0 and p.stderr.count(b"\n") == 1 and p.stderr.startswith(b"error: ")


# --- the function and the stream, in process --------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=()), max_size=40))
def test_printable_leaves_nothing_that_drives_a_terminal(s):
    out = printable(s)
    assert not any(ord(c) in CONTROLS or 0xD800 <= ord(c) < 0xE000 for c in out)
    assert "\n" not in printable(s, newlines=False) and "\t" not in printable(s, newlines=False)
    if not any(ord(c) in CONTROLS or 0xD800 <= ord(c) < 0xE000 for c in s):
        assert out == s  # text without controls passes untouched (tabs and newlines too)
    out.encode("utf-8")  # always encodable: no lone surrogate is left to raise


def test_printable_escapes_read_back():
    assert printable("a\x1b]0;x\x07b\udce9\x9bc\r\x7f") == "a\\x1b]0;x\\x07b\\udce9\\x9bc\\r\\x7f"
    assert printable("line\n\tnext") == "line\n\tnext"
    assert printable("line\n\tnext", newlines=False) == "line\\n\\tnext"


def test_ui_safe_uses_the_same_table():
    every = "".join(map(chr, CONTROLS))
    assert plain(every) == "·" * len(every)
    assert plain("\t\n") == "\t\n"


def test_the_stream_cleans_any_print_and_keeps_the_rest():
    buf = io.StringIO()
    stream = PrintableStream(buf)
    print("title \x1b]0;x\x07", "\udce9", file=stream)  # type: ignore[arg-type]
    stream.writelines(["\x9b", "ok\n"])
    assert buf.getvalue() == "title \\x1b]0;x\\x07 \\udce9\n\\x9bok\n"
    assert stream.getvalue() == buf.getvalue()  # anything else is the wrapped stream's


def test_streams_are_wrapped_for_the_command_only(capsys):
    before = sys.stdout
    with printable_streams():
        assert isinstance(sys.stdout, PrintableStream) and isinstance(sys.stderr, PrintableStream)
        with printable_streams():  # nested: not wrapped twice
            assert not isinstance(sys.stdout.inner, PrintableStream)
        print("\x1bc")
    assert sys.stdout is before and capsys.readouterr().out == "\\x1bc\n"


def test_a_traceback_out_of_the_command_prints_clean(monkeypatch):
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # put back whatever is left, after the test
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    with pytest.raises(RuntimeError), printable_streams():
        raise RuntimeError("\x1b]0;title\x07")
    assert isinstance(sys.stderr, PrintableStream)  # the excepthook writes through it


def test_console_sink_escapes_without_the_cli():
    """An own loop prints through ConsoleSink with no cli.main around it."""
    buf = io.StringIO()
    sink = ConsoleSink(stream=buf)
    sink.emit(RunStart(step=0, run_name="r\x1b]0;x\x07\n", config={}, n_params=1, device="cpu", total_steps=3))
    sink.emit(Sample(step=1, prompt="\x1bc", text="\x1bc\nnext\x9b"))
    sink.emit(RunEnd(step=1, status="failed", error="boom\x1b[2J\nline two", elapsed_s=1.0, val_loss=None))
    out = buf.getvalue()
    assert not any(ord(c) in CONTROLS for c in out.replace("\n", ""))
    assert out.count("\n") == 3  # a newline in a name or an error does not break the line
    assert "sample    1 | \\x1bc\\nnext\\x9b" in out


async def test_print_inside_a_textual_app_still_works():
    from textual.app import App

    class Printer(App):
        def on_mount(self) -> None:
            print("inside \x1bc the app")
            self.exit("done")

    with printable_streams():
        app = Printer()
        async with app.run_test() as pilot:
            await pilot.pause()
    assert app.return_value == "done"
