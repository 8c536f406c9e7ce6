"""OAuth2 clients: the clients file, its hashed secrets, and the store (`serving.clients`)."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest

from sentiment_mlops.serving.clients import ClientStore, add_client
from sentiment_mlops.serving.tokens import AuthConfigError

from .auth_setup import UNKNOWN_ROOT


def test_client_store_authenticates_only_the_right_secret(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    secret = add_client(path, "batch-job", ["predict", "feedback"])
    store = ClientStore.load(path)
    assert len(store) == 1
    assert store.authenticate("batch-job", secret) == {"predict", "feedback"}
    assert store.authenticate("batch-job", secret + "x") is None
    assert store.authenticate("nobody", secret) is None


def test_clients_file_holds_only_hashes_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "var" / "clients.json"
    first = add_client(path, "a", ["predict"])
    second = add_client(path, "b", ["admin"])
    text = path.read_text()
    assert first not in text
    assert second not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(text)
    assert document["clients"]["a"]["scopes"] == ["predict"]
    assert document["clients"]["b"]["secret_hash"].startswith("scrypt$16384$8$1$")


def test_adding_a_client_again_replaces_its_secret(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    old = add_client(path, "a", ["predict"])
    new = add_client(path, "a", ["predict", "admin"])
    store = ClientStore.load(path)
    assert store.authenticate("a", old) is None
    assert store.authenticate("a", new) == {"predict", "admin"}


def test_add_client_validates_its_input(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    with pytest.raises(ValueError, match="client id"):
        add_client(path, "has space", ["predict"])
    with pytest.raises(ValueError, match="unknown scope"):
        add_client(path, "a", ["root"])
    with pytest.raises(ValueError, match="at least one scope"):
        add_client(path, "a", [])
    assert not path.exists()


def test_missing_clients_file_means_no_clients(tmp_path: Path) -> None:
    assert len(ClientStore.load(tmp_path / "absent.json")) == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "expected"),
        ('{"clients": {"a": {"secret_hash": "plain", "scopes": ["predict"]}}}', "client 'a'"),
        ('{"clients": {"a": {"secret_hash": "scrypt$3$8$1$AA==$AA==", "scopes": []}}}', "'a'"),
        ('{"clients": {"a": []}}', "client 'a'"),
    ],
)
def test_malformed_clients_file_is_a_config_error(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "clients.json"
    path.write_text(content)
    with pytest.raises(AuthConfigError, match=message):
        ClientStore.load(path)


def test_unknown_scope_in_clients_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    add_client(path, "a", ["predict"])
    document = json.loads(path.read_text())
    document["clients"]["a"]["scopes"] = ["root"]
    path.write_text(json.dumps(document))
    with pytest.raises(AuthConfigError, match="unknown scope"):
        ClientStore.load(path)


def test_client_store_picks_up_clients_added_while_running(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    store = ClientStore.load(path)
    assert len(store) == 0
    secret = add_client(path, "late-joiner", ["predict"])
    assert store.authenticate("late-joiner", secret) == {"predict"}
    path.write_text("not json")
    assert store.authenticate("late-joiner", secret) == {"predict"}, "a broken file keeps the old"


def test_add_client_and_the_clients_file_use_the_one_scope_check(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    with pytest.raises(ValueError, match=re.escape(UNKNOWN_ROOT)):
        add_client(path, "a", ["predict", "root"])
    add_client(path, "a", ["predict"])
    document = json.loads(path.read_text())
    document["clients"]["a"]["scopes"] = ["predict", "root"]
    path.write_text(json.dumps(document))
    with pytest.raises(AuthConfigError, match=re.escape(f"client 'a': {UNKNOWN_ROOT}")):
        ClientStore.load(path)
    document["clients"]["a"]["scopes"] = ["root", 7]
    path.write_text(json.dumps(document))
    with pytest.raises(AuthConfigError, match=re.escape("unknown scope(s) [7, 'root']")):
        ClientStore.load(path)
