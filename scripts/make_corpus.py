"""Rebuild the embedded default corpus, tui_trainer/corpus/stdlib.txt.gz.

The corpus is a fixed list of pure-Python modules from CPython's standard
library (PSF licence), concatenated in this order with a header line naming
each file.  It is shipped inside the package (rather than read from the local
install at run time) so every machine trains on byte-identical data: the
same run resumes anywhere, and demo numbers are comparable across machines.

    python scripts/make_corpus.py          # writes the .gz beside the package
"""
from __future__ import annotations

import gzip
import pathlib
import sys
import sysconfig

MODULES = [
    "textwrap.py", "string.py", "shlex.py", "fnmatch.py", "glob.py", "bisect.py",
    "heapq.py", "queue.py", "calendar.py", "difflib.py", "dataclasses.py",
    "functools.py", "argparse.py", "pathlib.py", "enum.py", "json/__init__.py",
    "json/decoder.py", "json/encoder.py", "collections/__init__.py", "contextlib.py",
    "abc.py", "copy.py", "csv.py", "fractions.py", "statistics.py", "random.py",
    "shutil.py", "tempfile.py", "configparser.py", "pprint.py", "reprlib.py",
    "operator.py", "numbers.py", "graphlib.py", "secrets.py", "sched.py", "cmd.py",
    "getopt.py", "colorsys.py", "timeit.py", "linecache.py", "traceback.py",
    "filecmp.py", "fileinput.py", "weakref.py", "selectors.py", "this.py",
]
TARGET_BYTES = 1_000_000


def build(stdlib: pathlib.Path) -> bytes:
    out = bytearray()
    for name in MODULES:
        src = (stdlib / name).read_bytes()
        out += f"# ===== Lib/{name} =====\n".encode() + src
        if not src.endswith(b"\n"):
            out += b"\n"
        if len(out) >= TARGET_BYTES:
            break
    return bytes(out)


def main() -> int:
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    text = build(stdlib)
    dest = pathlib.Path(__file__).resolve().parent.parent / "tui_trainer" / "corpus" / "stdlib.txt.gz"
    # mtime=0 keeps the archive byte-identical between rebuilds.
    with open(dest, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(text)
    print(f"wrote {dest} ({len(text):,} bytes of text, Python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
