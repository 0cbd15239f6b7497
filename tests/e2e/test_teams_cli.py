"""``inferd teams`` and ``inferd users``: create, link keys, list by page, disable, with each
change in the audit log as the command's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers import ROOT


def inferd(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inferd", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"),
                               "INFERD_DATA_DIR": str(data)})


def ok(data: Path, *args: str) -> Any:
    done = inferd(data, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_teams_and_users_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    team = json.loads(ok(data, "teams", "create", "search", "--model", "echo", "--rpm", "5",
                         "--max-budget", "12.5", "--budget-alert", "90",
                         "--budget-period", "month"))
    assert (team["name"], team["models"], team["rpm"]) == ("search", ["echo"], 5)
    assert (team["max_budget"], team["budget_alert"]) == (12.5, 90)
    user = json.loads(ok(data, "users", "create", "ann", "--email", "ann@example.org",
                         "--max-budget", "3"))
    assert user["max_budget"] == 3.0
    for name in ("bob", "carl"):
        ok(data, "users", "create", name)
    member = json.loads(ok(data, "teams", "add-member", str(team["id"]), str(user["id"]),
                           "--role", "owner"))
    assert member["role"] == "owner"
    key = json.loads(ok(data, "keys", "create", "--name", "k", "--team-id", str(team["id"]),
                        "--user-id", str(user["id"])))
    assert (key["team"], key["owner"]) == ("search", "ann")
    paying = json.loads(ok(data, "keys", "update", str(key["id"]), "--max-budget", "0.5"))
    assert (paying["max_budget"], paying["budget_alert"]) == (0.5, None)
    ok(data, "keys", "create", "--name", "other")
    mine = ok(data, "keys", "list", "--user-id", str(user["id"])).splitlines()
    assert [json.loads(line)["name"] for line in mine] == ["k"]
    listed = [json.loads(line) for line in ok(data, "users", "list", "--limit", "2").splitlines()]
    assert [u["name"] for u in listed] == ["ann", "bob"]
    after = [json.loads(line)["name"] for line in
             ok(data, "users", "list", "--after", str(listed[-1]["id"])).splitlines()]
    assert after == ["carl"]
    members = [json.loads(line) for line in ok(data, "teams", "members",
                                                 str(team["id"])).splitlines()]
    assert [(m["name"], m["role"]) for m in members] == [("ann", "owner")]
    disabled = json.loads(ok(data, "users", "update", str(user["id"]), "--disable"))
    assert disabled["disabled"] is True
    refused = inferd(data, "teams", "delete", str(team["id"]))
    assert refused.returncode != 0 and "still has 1 API key" in refused.stderr
    changed = json.loads(ok(data, "teams", "update", str(team["id"]), "--all-models",
                            "--name", "search2"))
    assert changed["models"] is None and changed["name"] == "search2"
    exported = [json.loads(line) for line in ok(data, "audit", "export").splitlines()]
    actions = [e["action"] for e in exported]
    assert {"team.create", "user.create", "team.member.set", "user.disable",
            "team.update"} <= set(actions)
    assert {e["actor"]["via"] for e in exported} == {"cli"}


def test_queue_weights_of_teams_and_keys_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    team = json.loads(ok(data, "teams", "create", "search", "--queue-weight", "3"))
    assert team["queue_weight"] == 3.0
    changed = json.loads(ok(data, "teams", "update", str(team["id"]), "--queue-weight", "0.5"))
    assert changed["queue_weight"] == 0.5
    key = json.loads(ok(data, "keys", "create", "--name", "k", "--team-id", str(team["id"]),
                        "--queue-weight", "2"))
    assert key["queue_weight"] == 2.0
    lighter = json.loads(ok(data, "keys", "update", str(key["id"]), "--queue-weight", "1.25"))
    assert lighter["queue_weight"] == 1.25
    refused = inferd(data, "teams", "update", str(team["id"]), "--queue-weight", "0")
    assert refused.returncode != 0 and "queue_weight" in refused.stderr
