"""Hostile input, wave 6: settings that name files and folders.

- A TOML string may hold a NUL byte, which no path can: ``data``, ``out`` and
  ``init_from`` with one were a ``ValueError: embedded null byte`` traceback
  (``config.validate`` refuses them now, in one line, before anything is made).
- A run's name becomes a folder (``outputs/NAME``, a fork's ``NAME`` beside its
  parent): ``../../x`` put the run outside, ``a/b`` nested it, ``.`` made a
  hidden ``.-2``, a NUL was a traceback.  ``files.folder_name_problem`` is the
  one check every folder made from a name passes (``run.folder.create_run_dir``,
  ``run.fork.fork_folder``, and ``config.validate`` before any window).
- ``--tokenizer`` without ``--data`` was silently ignored (the embedded corpus
  trains on bytes; the file named was never read): one line now.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tui_trainer import cli
from tui_trainer.files import NAME_MAX, folder_name_problem

HOSTILE = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--context-length", "16", "--batch-size", "4",
        "--eval-batches", "1", "--sample-tokens", "4"]
# Text a TOML basic string can hold once escaped (no lone surrogates).
chars = st.characters(blacklist_categories=("Cs",))


def toml_string(s: str) -> str:
    """``s`` as a TOML basic string: every control character, DEL, quote and backslash escaped."""
    return '"' + "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or c in '\x7f"\\' else c for c in s) + '"'


def tree(root: Path) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, dirs, files in os.walk(root) for f in dirs + files}


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), cap.err
    assert "Traceback" not in cap.err + cap.out
    assert not any(ord(c) < 32 for c in lines[0]), lines[0]
    return lines[0]


# Names that cannot be one folder: a path (a separator anywhere), '.', '..', a NUL, too long.
bad_names = st.one_of(
    st.tuples(st.text(chars, max_size=6), st.sampled_from(["/", "../", "/../", "./"]), st.text(chars, max_size=6))
    .map("".join),
    st.sampled_from([".", "..", "../..", "/", "/etc", "../../x"]),
    st.tuples(st.text(chars, max_size=6), st.text(chars, max_size=6)).map(lambda t: f"{t[0]}\x00{t[1]}"),
    st.text(st.sampled_from("aé"), min_size=NAME_MAX + 1, max_size=NAME_MAX + 40),
)


def train_refused_in(work: Path, conf: Path) -> None:
    """``train --config CONF`` run from ``work`` (relative outputs/ land there): refused, exit 2."""
    cwd = os.getcwd()
    os.chdir(work)
    try:
        assert cli.main(["train", "--headless", "--config", str(conf)]) == 2
    finally:
        os.chdir(cwd)


@HOSTILE
@given(name=bad_names)
def test_a_name_that_is_not_one_folder_is_one_line_and_makes_nothing(tmp_path_factory, capsys, name):
    """``train --config`` with such a ``name`` (no --out: the folder would be
    outputs/NAME): one line, exit 2, nothing made anywhere near."""
    root = tmp_path_factory.mktemp("n")
    work = root / "a" / "b"
    work.mkdir(parents=True)
    conf = work / "run.toml"
    conf.write_text(f"steps = 2\nname = {toml_string(name)}\n", encoding="utf-8")
    before = tree(root)
    train_refused_in(work, conf)
    assert one_error_line(capsys).startswith("error: --name ")
    assert tree(root) == before


@pytest.fixture(scope="module")
def parent_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("parent") / "base"
    assert cli.main(["train", "--headless", "--steps", "2", "--out", str(run), *TINY]) == 0
    return run


@HOSTILE
@given(name=bad_names)
def test_a_forks_name_that_is_not_one_folder_is_one_line_and_makes_nothing(parent_run, capsys, name):
    """``--fork RUN`` names its folder beside RUN by ``name`` (from a TOML file
    here, as a NUL cannot be an argument): never a folder elsewhere."""
    conf = parent_run.parent / "fork.toml"
    conf.write_text(f"name = {toml_string(name)}\n", encoding="utf-8")
    top = parent_run.parent.parent
    before = tree(top)
    assert cli.main(["train", "--headless", "--fork", str(parent_run), "--steps", "3", "--config", str(conf)]) == 2
    assert one_error_line(capsys).startswith("error: --name ")
    assert tree(top) == before


@HOSTILE
@given(key=st.sampled_from(["data", "out", "init_from"]), head=st.text(chars, max_size=8),
       tail=st.text(chars, max_size=8))
def test_a_nul_in_a_path_setting_is_one_line_and_makes_nothing(tmp_path_factory, capsys, key, head, tail):
    work = tmp_path_factory.mktemp("nul")
    conf = work / "run.toml"
    conf.write_text(f"steps = 2\n{key} = {toml_string(head + chr(0) + tail)}\n", encoding="utf-8")
    before = tree(work)
    train_refused_in(work, conf)
    line = one_error_line(capsys)
    assert line.startswith(f"error: --{key.replace('_', '-')} holds a NUL byte"), line
    assert tree(work) == before


@settings(max_examples=60, deadline=None)
@given(name=st.text(chars, min_size=1, max_size=40))
def test_a_name_is_refused_exactly_when_it_is_not_one_folder(name):
    one_folder = name not in (".", "..") and "/" not in name and "\x00" not in name \
        and len(name.encode("utf-8", "surrogateescape")) <= NAME_MAX
    assert (folder_name_problem(name) is None) == one_folder, name


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=st.one_of(st.integers(257, 1 << 20).map(lambda n: f"bpe:{n}"), st.just("gpt2"),
                      st.sampled_from(["tokenizer.json", "ranks.tiktoken", "missing.json"])))
def test_a_tokenizer_without_data_is_one_line_not_ignored(tmp_path_factory, capsys, spec):
    """The embedded corpus trains on bytes: a --tokenizer given without --data
    was silently ignored (its file never even read); now one line, no folder."""
    work = tmp_path_factory.mktemp("tok")
    (work / "tokenizer.json").write_text('{"a": 1}')  # not even a tokenizer: it was never read
    out = work / "run"
    assert cli.main(["train", "--headless", "--steps", "2", "--tokenizer", str(work / spec) if "." in spec else spec,
                     "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert "needs --data" in line and not out.exists(), line


def test_plain_names_still_make_their_folder(tmp_path, monkeypatch):
    """A name that is one folder (any unicode, spaces, an escape shown as such) is its folder."""
    monkeypatch.chdir(tmp_path)
    name = "lr half é \x1b[31m"
    assert cli.main(["train", "--headless", "--steps", "2", "--name", name, *TINY]) == 0
    assert (tmp_path / "outputs" / name / "losses.jsonl").is_file()


# --- TUI_TRAINER_LAUNCH: an environment variable is untrusted -----------------------------------------------
LAUNCH_DIR_PREFIX, LAUNCH_FILE = "tui-trainer-run-", "run_dir"  # what tui-trainer run makes (loops/launch.py)

def _launch_target(root: Path, kind: str, content: bytes) -> tuple[str, Path]:
    """(the variable's value, the file that must keep ``content``)."""
    precious = root / "precious.txt"
    precious.write_bytes(content)
    if kind == "file":  # a file of the user's: ~/.bashrc
        return str(precious), precious
    if kind == "dir_link":  # a link to a private folder: not the launcher's own
        private = root / "private"
        private.mkdir(mode=0o700)
        (root / f"{LAUNCH_DIR_PREFIX}x").symlink_to(private)
        return str(root / f"{LAUNCH_DIR_PREFIX}x" / LAUNCH_FILE), precious
    folder = root / (f"{LAUNCH_DIR_PREFIX}x" if kind != "not_prefixed" else "x")
    folder.mkdir(mode=0o755 if kind == "shared" else 0o700)
    target = folder / (LAUNCH_FILE if kind != "other_name" else "notes.txt")
    if kind == "link":
        target.symlink_to(precious)
    else:
        target.write_bytes(content)
        precious = target
    return str(target), precious


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["file", "shared", "exists", "other_name", "not_prefixed", "link", "dir_link"]),
       content=st.binary(min_size=1, max_size=64))
def test_a_launch_variable_not_of_the_launcher_overwrites_nothing(tmp_path_factory, monkeypatch, kind, content):
    """``init`` under a TUI_TRAINER_LAUNCH it did not get from ``tui-trainer
    run`` (left exported, inherited, hostile) replaced the file it named with
    a folder's path and sent the script's output into the run folder; now the
    file is kept and the output stays on the terminal."""
    import tui_trainer
    from tui_trainer.loops.api import LAUNCH_ENV

    root = tmp_path_factory.mktemp("launch")
    value, precious = _launch_target(root, kind, content)
    monkeypatch.setenv(LAUNCH_ENV, value)
    saved = os.dup(1), os.dup(2)  # were they redirected, the test session's own output is put back
    before = os.fstat(1).st_ino, os.fstat(2).st_ino
    try:
        with tui_trainer.init(str(root / "run"), signals=False, quiet=True) as run:
            run.log(1, train_loss=1.0)
        after = os.fstat(1).st_ino, os.fstat(2).st_ino
    finally:
        for fd, kept in zip((1, 2), saved):
            os.dup2(kept, fd)
            os.close(kept)
    assert precious.read_bytes() == content
    assert after == before and not (root / "run" / "output.log").exists()


def test_the_launchers_own_file_is_taken(tmp_path):
    import tempfile

    from tui_trainer.loops.api import launch_file

    with tempfile.TemporaryDirectory(prefix=LAUNCH_DIR_PREFIX, dir=tmp_path) as tmp:
        assert launch_file(str(Path(tmp) / LAUNCH_FILE)) == Path(tmp) / LAUNCH_FILE


# --- the control socket: connections that hold a slot and never finish ---------------------------------------

def test_connections_that_never_finish_cannot_keep_a_request_out(tmp_path):
    """Clients that connect and send half a line, a byte now and then, or
    nothing (a leaked script, a hostile one) took every slot: a ``stop`` was
    answered ``busy: 16 clients connected`` for as long as they stayed.  Now
    the quietest makes room; seeded random hoards of every size and manner."""
    import random
    import socket

    from tui_trainer.control.channel import request
    from tui_trainer.control.server import ControlServer

    rng = random.Random(6)
    for trial in range(8):
        run_dir = tmp_path / f"r{trial}"
        run_dir.mkdir()
        got: list[object] = []
        slots = rng.randint(1, 16)
        with ControlServer(run_dir, lambda req: got.append(req) or {"ok": True}, max_clients=slots) as srv:
            hoard = []
            for _ in range(slots + rng.randint(0, 12)):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(os.fspath(srv.path))
                s.sendall(rng.choice([b"", b"{", b'{"cmd": "pau', b"\x00\xff", b"[" * 10, b'{"cmd": "stop"']))
                hoard.append(s)
            for s in rng.sample(hoard, len(hoard) // 3):  # some keep their slot fresh
                try:
                    s.sendall(b" ")
                except OSError:
                    pass  # already made room for another
            answer = request(run_dir, {"cmd": "stop"}, timeout=10.0)
            assert answer["ok"] is True, (trial, slots, answer)
            assert got[-1] == {"cmd": "stop", "deadline": got[-1]["deadline"]}
            assert all(r.get("cmd") == "stop" and "deadline" in r for r in got), got  # no half line became one
            for s in hoard:
                s.close()


# --- run names from a log: work bounded whatever their length -----------------------------------------------

words = st.text(st.sampled_from("abcxyz019"), min_size=1, max_size=4)


@settings(max_examples=25, deadline=None)
@given(names=st.lists(st.lists(words, min_size=150, max_size=400).map("-".join), min_size=2, max_size=3),
       tail=st.lists(st.text(st.sampled_from("pq"), min_size=1, max_size=3), min_size=3, max_size=3))
def test_labels_of_names_of_many_words_are_made_in_bounded_memory(names, tail):
    """``ls``, the runs browser, ``view A B``, ``--snap`` and ``export`` label
    runs by the shortest part of their names no other has; the parts were
    every run of consecutive words, so two log names of 1500 words each made
    ``tui-trainer ls`` take 4 GB and end in a MemoryError.  Here at most a few
    hundred parts a name, checked by the memory it takes (not its time)."""
    import tracemalloc

    from tui_trainer.runs.labels import LABEL_MAX, short_labels

    names = [f"{n}-{t}" for n, t in zip(names, tail)]
    tracemalloc.start()
    try:
        labels = short_labels(names)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    assert len(labels) == len(names) and all(0 < len(lab) <= LABEL_MAX for lab in labels)
    if len(set(names)) == len(names):
        assert len(set(labels)) == len(labels), (names, labels)


def test_ls_of_runs_named_in_thousands_of_words(tmp_path, capsys):
    from runmaker import write_run

    for i, letter in enumerate("wv"):
        write_run(tmp_path / f"r{i}", steps=3, eval_every=1, name="-".join(f"{letter}{k}" for k in range(1500)))
    assert cli.main(["ls", str(tmp_path)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert [r.split()[0] for r in rows[1:]] == ["w1499", "v1499"] or \
        sorted(r.split()[0] for r in rows[1:]) == ["v1499", "w1499"], rows


@settings(max_examples=30, deadline=None)
@given(size=st.integers(0, 200_000), char=st.sampled_from("xa.é"))
def test_the_browser_filter_searches_a_bounded_part_of_a_name(size, char):
    """The ``/`` filter is the user's regex over untrusted names: ``x.*y`` on a
    name of 200k characters is quadratic (minutes with the screen held).  Each
    field it searches is bounded, whatever the name's length."""
    from tui_trainer.runs.summary import RunSummary
    from tui_trainer.ui.run_columns import matches

    seen: list[int] = []

    class Counting:
        def search(self, text: str) -> bool:
            seen.append(len(text))
            return False

    s = RunSummary("p", char * min(size, 255) or "f", run_name=char * size)
    s.label, s.status = (char * size)[:12], "finished"
    assert matches(Counting(), s) is False  # type: ignore[arg-type]
    assert len(seen) == 4 and max(seen) <= 256


# --- the client side of the control socket: what answers is untrusted too ----------------------------------

def _fake_run(behaviour: str, size: int) -> tuple[Path, object]:
    """A run folder whose control.sock is served by a thread that answers as ``behaviour``."""
    import socket
    import tempfile
    import threading

    folder = Path(tempfile.mkdtemp(prefix="w6", dir="/tmp"))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(folder / "control.sock"))
    listener.listen(1)
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(0.5)
        try:
            conn.recv(4096)
            if behaviour == "trickle":  # a byte now and then, never a line: for longer than the client waits
                for _ in range(size):
                    if done.wait(0.1):
                        break
                    conn.sendall(b" ")
            elif behaviour == "endless":  # megabytes without a line break
                chunk = b"x" * 65536
                for _ in range(size):
                    if done.is_set():
                        break
                    conn.sendall(chunk)
            elif behaviour == "deep":
                conn.sendall(b"[" * size + b"]" * size + b"\n")
            elif behaviour == "not_a_dict":
                conn.sendall(b'["ok", true]\n')
        except OSError:
            pass
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def stop() -> None:
        done.set()
        thread.join(timeout=30)
        listener.close()
        import shutil
        shutil.rmtree(folder, ignore_errors=True)

    return folder, stop


@settings(max_examples=12, deadline=None)
@given(case=st.one_of(st.tuples(st.just("trickle"), st.integers(40, 80)),
                      st.tuples(st.just("endless"), st.integers(40, 200)),
                      st.tuples(st.just("deep"), st.integers(2_000, 200_000)),
                      st.tuples(st.just("not_a_dict"), st.just(0))))
def test_a_socket_that_answers_badly_is_one_control_error(case):
    """``attach --send``, ``status``, ``mcp`` ask through ``channel.request``:
    a socket that trickled bytes kept it waiting (each recv had the timeout,
    the exchange none), one that sent megabytes without a line break grew its
    buffer without end, and an answer nested deep was a RecursionError."""
    from tui_trainer.control.channel import ControlError, request

    behaviour, size = case
    folder, stop = _fake_run(behaviour, size)
    try:
        with pytest.raises(ControlError) as e:
            request(folder, "status", timeout=1.0)
    finally:
        stop()
    words = {"trickle": "did not answer within", "endless": "without ending its answer",
             "deep": "without an answer", "not_a_dict": "malformed"}[behaviour]
    assert words in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_socket_of_another_user_is_not_asked(monkeypatch):
    from tui_trainer.control import channel

    folder, stop = _fake_run("not_a_dict", 0)
    monkeypatch.setattr(channel, "peer_uid", lambda s: os.getuid() + 1)
    try:
        with pytest.raises(channel.ControlError, match="served by another user"):
            channel.request(folder, "stop", timeout=1.0)
    finally:
        stop()


# --- lines read outside the log reader: nesting too deep for the JSON parser ------------------------------------

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(["parent", "tail", "control.json"]), depth=st.integers(1_100, 30_000),
       bracket=st.sampled_from("[{"), command=st.sampled_from(["snap", "export", "status", "ls", "attach", "send"]))
def test_a_line_nested_too_deep_is_no_traceback(tmp_path_factory, capsys, where, depth, bracket, command):
    """Lines read beside the log reader (a log's first line for a fork's
    parent, its tail for the run's end, control.json, a followed sample) went
    through ``json.loads`` catching ValueError only: a line nested deeper than
    its recursion was a RecursionError traceback (``view --snap``, ``export``,
    ``attach RUN``).  All go through ``records.json_object`` now."""
    import json

    from runmaker import write_run

    root = tmp_path_factory.mktemp("deep")
    run = write_run(root / "r", steps=3, eval_every=1, end=None)
    deep = ("[" * depth + "]" * depth) if bracket == "[" else ('{"a":' * depth + "1" + "}" * depth)
    log = run / "losses.jsonl"
    lines = log.read_text().splitlines()
    if where == "parent":
        start = json.loads(lines[0])
        lines[0] = json.dumps(start)[:-1] + f', "parent": {deep}}}'
    elif where == "tail":
        lines.append(f'{{"type": "run_end", "step": 3, "x": {deep}}}')
    else:
        (run / "control.json").write_text(f'{{"socket": {deep}}}')
    log.write_text("\n".join(lines) + "\n")
    argv = {"snap": ["view", "--snap", str(run)], "export": ["export", str(run), "-o", "-"],
            "status": ["status", str(run)], "ls": ["ls", str(root)], "attach": ["attach", str(run)],
            "send": ["attach", str(run), "--send", "status"]}[command]
    code = cli.main(argv)
    cap = capsys.readouterr()
    assert isinstance(code, int) and "Traceback" not in cap.err + cap.out
    assert all(line.startswith("error: ") for line in cap.err.splitlines() if line.strip() and command != "export")


# --- TUI_TRAINER_CACHE may name any folder: only the cache's own files are removed ---------------------------

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stem=st.text(st.sampled_from("abcz019_-"), min_size=1, max_size=12),
       pid=st.integers(4_194_305, 9_999_999_999), tail=st.sampled_from(["", "-", "-beef", "-0123abcd", ".x"]),
       dead=st.integers(4_194_305, 2**31 - 1))
def test_the_token_cache_cleans_only_its_own_stale_files(tmp_path_factory, stem, pid, tail, dead):
    """A cache folder's stale temporary files (their writer gone) are removed
    at the next write; the test was any ``.*.tmp`` whose second-last part
    began with a number no process has, so with TUI_TRAINER_CACHE at a shared
    folder (a home, a project) another program's ``.notes.123.tmp`` went too,
    and one whose number was past a C int (``.x.9999999999.tmp``) was an OverflowError."""
    from tui_trainer.text import token_cache

    folder = tmp_path_factory.mktemp("cache")
    theirs = folder / f".{stem}.{pid}{tail}.tmp"  # pids above the kernel's maximum: no process has them
    theirs.write_bytes(b"someone's notes")
    ours = folder / f".{'ab' * 16}.ids.{dead}-0123abcd.tmp"
    ours.write_bytes(b"half a cache file")
    token_cache._clear_stale(folder)
    assert theirs.read_bytes() == b"someone's notes"
    assert not ours.exists()


# --- flags whose value reaches a wait -----------------------------------------------------------------------

@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.floats(7 * 86400 + 1, 1e308), st.sampled_from(["1e10", "1e308", "inf", "nan", "0", "-1"])),
       command=st.sampled_from(["train", "attach", "view"]))
def test_an_on_event_timeout_past_what_a_wait_takes_is_one_line(tmp_path_factory, capsys, value, command):
    """``--on-event-timeout 1e10`` was taken, trained, and ended in an
    OverflowError traceback (a join's timeout past time_t) after the run."""
    work = tmp_path_factory.mktemp("ev")
    text = value if isinstance(value, str) else repr(value)
    argv = {"train": ["train", "--headless", "--steps", "2", "--out", str(work / "run")],
            "attach": ["attach", str(work)], "view": ["view", "--follow", str(work)]}[command]
    assert cli.main([*argv, "--on-event", "true", "--on-event-timeout", text]) == 2
    assert "--on-event-timeout" in one_error_line(capsys)
    assert not (work / "run").exists()


@settings(max_examples=30, deadline=None)
@given(value=st.floats(1e-3, 7 * 86400))
def test_an_on_event_timeout_up_to_a_week_is_taken(value):
    from tui_trainer.cli.parser import build_parser

    args = build_parser().parse_args(["train", "--on-event", "true", "--on-event-timeout", repr(value)])
    assert args.on_event_timeout == value


@settings(max_examples=40, deadline=None)
@given(name=bad_names, out=st.booleans())
def test_a_typed_fork_refuses_at_once_the_name_train_fork_would(name, out):
    """``:fork name=...`` in the dashboard or attach shows the ``train --fork``
    command to run: a name that command refuses is refused in the box at once."""
    from tui_trainer.run.fork import setting_words

    settings_typed = {"name": name, **({"out": "elsewhere"} if out else {})}
    why = setting_words(settings_typed)
    assert (why is None) == out, why
    if why is not None:
        assert why.startswith("name=")
