"""``tui-trainer mcp``: driven by the ``mcp`` package's own client over stdio
against a live tiny run; steering lands in the run's log with source ``mcp``;
refusals come back as tool errors."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runmaker import write_run
from test_terminal_text import TINY, env, wait_for
from tui_trainer.control.channel import TrainerControl, request
from tui_trainer.cli.mcp_server import Refused, Tools, downsample, run_path


def need_mcp() -> None:
    pytest.importorskip("mcp", reason="the optional mcp package is not installed (pip install 'tui-trainer[mcp]')")


def test_a_request_may_say_it_comes_from_mcp_and_nothing_else(tiny_cfg):
    from test_control import drained

    from trainer_with_run import trainer_with_run

    t, run = trainer_with_run(tiny_cfg(threads=1))
    handle = TrainerControl(run).handle
    for said in ("mcp", "keys", "api", None, 3):
        req = {"cmd": "set", "key": "lr_scale", "value": 0.5, **({"source": said} if said else {})}
        assert handle(req)["ok"]
        (order,) = drained(run.commands)
        assert order.source == ("mcp" if said == "mcp" else "attach")


def test_runs_outside_the_folder_are_unreachable(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "a", steps=10)
    write_run(tmp_path / "outside", steps=10)
    (root / "link").symlink_to(tmp_path / "outside")
    assert run_path(root, "a") == (root / "a").resolve()
    for bad in ("../outside", str(tmp_path / "outside"), "link", "a/../../outside", "", "."):
        with pytest.raises(Refused):
            run_path(root, bad)


def test_read_tools_and_refusals_without_a_live_run(tmp_path):
    write_run(tmp_path / "a", steps=50, config={"max_lr": 1e-3})
    write_run(tmp_path / "b", steps=50, config={"max_lr": 3e-4})
    tools = Tools(tmp_path)
    assert {r["run"] for r in tools.list_runs()} == {"a", "b"}
    s = tools.metric_series("a", "train_loss", max_points=10)
    assert len(s["steps"]) == 10 and s["steps"][0] == 1 and s["steps"][-1] == 50 and s["points_in_log"] == 50
    assert tools.metric_series("a", "val_loss")["steps"] == [10, 20, 30, 40, 50]
    assert tools.diff_settings("a", "b")["max_lr"] == {"a": 1e-3, "b": 3e-4}
    assert tools.recent_samples("a", 2)[-1]["step"] == 50
    with pytest.raises(Refused, match="not live"):
        tools.send("a", {"cmd": "pause"})
    with pytest.raises(Refused, match="read-only"):
        Tools(tmp_path, read_only=True).send("a", {"cmd": "pause"})
    assert downsample([(i, float(i)) for i in range(7)], 3) == [(0, 0.0), (3, 3.0), (6, 6.0)]


async def _drive(root: Path, run: str) -> dict:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    params = StdioServerParameters(command=sys.executable, args=["-m", "tui_trainer", "mcp", str(root)],
                                   env=env(), cwd=str(root))
    got: dict = {}
    async with Client(params, read_timeout_seconds=120) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        got["tools"] = names

        async def call(name: str, **kw) -> tuple[bool, dict | list | str]:
            r = await client.call_tool(name, kw)
            text = r.content[0].text if r.content else ""
            try:
                body = json.loads(text)
            except ValueError:
                body = text
            return bool(r.is_error), (r.structured_content if r.structured_content is not None else body)

        got["list"] = await call("list_runs")
        got["status"] = await call("run_status", run=run)
        got["set"] = await call("set_setting", run=run, key="lr_scale", value=0.5)
        got["bad_set"] = await call("set_setting", run=run, key="lr_scale", value=-3)
        got["outside"] = await call("run_status", run="../..")
        got["pause"] = await call("pause", run=run)
        got["resume"] = await call("resume", run=run)
        got["sample"] = await call("sample", run=run, prompt="def ", tokens=4)
        got["still"] = await call("run_status", run=run)  # the server still answers after the refusals
    return got


def test_an_agent_lists_reads_and_steers_a_live_run(tmp_path):
    need_mcp()
    out = tmp_path / "live"
    args = ["train", "--headless", "--steps", "100000", "--eval-every", "100000", "--out", str(out), *TINY]
    proc = subprocess.Popen([sys.executable, "-m", "tui_trainer", *args], cwd=tmp_path, env=env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (out / "control.sock").exists() and request(out, "status").get("step", 0) > 1,
                 proc, "steps")
        got = asyncio.run(_drive(tmp_path, "live"))
        assert request(out, "stop")["ok"]
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert {"list_runs", "run_status", "set_setting", "pause", "resume", "sample"} <= got["tools"]
    err, body = got["list"]
    assert not err and "live" in json.dumps(body)
    err, body = got["status"]
    assert not err and body["state"] == "running" and body["source"] == "control"
    assert got["set"][0] is False and got["pause"][0] is False and got["resume"][0] is False
    err, body = got["sample"]
    assert not err and "def " in json.dumps(body)
    err, body = got["bad_set"]
    assert err and "lr_scale" in str(body)
    assert got["outside"][0] is True and "outside" in str(got["outside"][1])
    assert got["still"][0] is False
    records = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    changes = [r for r in records if r["type"] == "change"]
    assert [(c["key"], c["new"], c["source"]) for c in changes] == [("lr_scale", 0.5, "mcp")]
    assert any(r["type"] == "pause" for r in records) and any(r["type"] == "resume" for r in records)


def test_read_only_server_has_no_steering_tools(tmp_path):
    need_mcp()
    write_run(tmp_path / "a", steps=10)

    async def tools() -> set[str]:
        from mcp import Client
        from mcp.client.stdio import StdioServerParameters

        params = StdioServerParameters(command=sys.executable,
                                       args=["-m", "tui_trainer", "mcp", str(tmp_path), "--read-only"], env=env())
        async with Client(params, read_timeout_seconds=120) as client:
            return {t.name for t in (await client.list_tools()).tools}

    names = asyncio.run(tools())
    assert "list_runs" in names and not names & {"set_setting", "pause", "resume", "eval_now", "checkpoint",
                                                  "sample"}
