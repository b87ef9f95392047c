"""``ainode users add|list|remove`` on a node's data directory."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from node.cli import main
from node.users import authenticate
from storage.database import JobDatabase


def test_users_add_list_remove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    db = JobDatabase(f"sqlite:///{tmp_path / 'ainode.sqlite3'}")
    data = ["--data-dir", str(tmp_path)]
    monkeypatch.setattr("sys.stdin", io.StringIO("correct-horse-battery\n"))
    assert main(["users", "add", "carol", "--role", "admin,phi", "--password-stdin", *data]) == 0
    user = authenticate(db, "carol", "correct-horse-battery")
    assert user is not None and user.roles == frozenset({"admin", "phi"})
    assert authenticate(db, "carol", "wrong-password") is None
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["users", "add", "dave", "--role", "viewer", "--password-stdin", *data]) == 2
    assert "password too short" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("long-enough-pw\n"))
    assert main(["users", "add", "dave", "--role", "root", "--password-stdin", *data]) == 2
    assert "unknown role 'root'" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("another-password\n"))
    assert main(["users", "add", "carol", "--role", "viewer", "--password-stdin", *data]) == 1
    assert "exists" in capsys.readouterr().err
    assert main(["users", "list", *data]) == 0
    listing = capsys.readouterr().out
    assert "carol" in listing and "admin,phi" in listing and "correct-horse" not in listing
    assert main(["users", "remove", "carol", *data]) == 0
    assert main(["users", "remove", "carol", *data]) == 1
    assert db.list_users() == []
    db.close()


def test_users_command_needs_an_existing_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["users", "list", "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "no job database" in capsys.readouterr().err
