"""What may be typed at the dashboard's command line (``:``) and what it
becomes: the control socket's very request (``parse``), the completions
offered as one types, a typed prompt's escapes, and a request in a few words.
Plain text in, plain data out; the screen and the sending are
``command_line``'s.
"""
from __future__ import annotations

from typing import Any

from . import safe

VERBS = ("pause", "resume", "eval", "checkpoint")  # no arguments
USAGE = "KEY=VALUE · set KEY=VALUE · sample PROMPT · pause · resume · eval · checkpoint · fork KEY=VALUE…"


def parse(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """A typed line as the socket's request: (request, None), or (None, why)."""
    line = text.strip()
    verb, _, rest = line.partition(" ")
    if not line:
        return None, None
    if verb in ("sample", "generate"):
        prompt = text.lstrip().partition(" ")[2]  # the prompt as typed: its spaces matter
        if not prompt:
            return None, "sample needs a prompt: sample def parse( (or press g)"
        return {"cmd": "sample", "prompt": unescape(prompt)}, None
    if verb in VERBS:
        if rest.strip():
            return None, f"{verb} takes nothing after it"
        return {"cmd": verb}, None
    if verb == "fork":
        return fork_request(rest)
    if verb == "stop":
        return None, "stop is not typed: press x twice (attach) or q twice (this window trains the run)"
    if verb == "set":
        line = rest.strip()
    key, sep, value = line.partition("=")
    if not sep:
        key, sep, value = line.partition(" ")
    key, value = key.strip(), value.strip()
    if not sep or not key or not value or " " in key:
        shown = safe.plain(text, 40, newlines=False)
        return None, f"expected KEY=VALUE such as lr_scale=0.5, or a command; got {shown!r}"
    return {"cmd": "set", "key": key, "value": value}, None


def fork_request(rest: str) -> tuple[dict[str, Any] | None, str | None]:
    """``fork KEY=VALUE ...``: a checkpoint now (``{"cmd": "checkpoint"}``),
    with the fork's settings beside it (``"fork"``: never sent to the run)."""
    from ..run.fork import FORK_CHANGES, setting_words

    settings: dict[str, str] = {}
    for word in rest.split():
        key, sep, value = word.partition("=")
        key = key.lstrip("-").replace("-", "_")
        if not sep or not value or key not in FORK_CHANGES:
            shown = safe.plain(word, 30, newlines=False)
            return None, (f"fork takes KEY=VALUE of a setting a fork may change ({', '.join(sorted(FORK_CHANGES))})"
                          f"; got {shown!r}")
        settings[key] = value
    if (why := setting_words(settings)) is not None:
        return None, why
    return {"cmd": "checkpoint", "fork": settings}, None


def unescape(prompt: str) -> str:
    """``\\n`` is a new line and ``\\t`` a tab in a typed prompt; ``\\\\`` a backslash."""
    out, chars = [], iter(prompt)
    for c in chars:
        if c == "\\":
            nxt = next(chars, "")
            out.append({"n": "\n", "t": "\t", "\\": "\\"}.get(nxt, c + nxt))
        else:
            out.append(c)
    return "".join(out)


def value_text(v: Any) -> str:
    """A setting's value as one would type it."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "?"
    return str(v) if isinstance(v, int) else format(v, "g")


def completions(text: str, settings: dict[str, Any]) -> list[str]:
    """Whole lines that ``text`` may become: a command or ``KEY=`` at the
    start, a key after ``set``, the current value after ``KEY=``."""
    lead = "set " if text.startswith("set ") else ""
    word = text[len(lead):]
    if "=" in word:
        key, _, value = word.partition("=")
        if value or key not in settings or settings[key] is None:
            return []
        return [f"{text}{value_text(settings[key])}"]
    if " " in word:
        return []
    words = [f"{k}=" for k in sorted(settings)]
    if not lead:
        words = [*VERBS, "sample ", "set ", "fork ", *words]
    return [lead + w for w in words if w.startswith(word) and w != word]


def in_words(req: dict[str, Any]) -> str:
    """A request in a few words: ``lr_scale=0.5``, ``sample 'def pa…'``, ``pause``."""
    if req["cmd"] == "set":
        return safe.plain(f"{req['key']}={req['value']}", 40, newlines=False)
    if req["cmd"] == "sample":
        return f"sample {safe.plain(req['prompt'], 16, newlines=False)!r}"
    return str(req["cmd"])
