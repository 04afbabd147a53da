"""`pacecds audit` read commands name the store they read and never create one (nor a key)."""
from __future__ import annotations

import json
import os

import pytest
import sqlalchemy as sa

from audit import AuditStore
from audit.config import describe_url
from pacecds.cli import main as pacecds_main

from .conftest import AUDIT_KEY
from .test_cli import run
from .test_store import decision

# every read command, in text and JSON form where it has one
READ_COMMANDS = [
    ["verify"], ["verify", "--json"], ["export"], ["export", "-o", "{tmp}/out.jsonl"],
    ["show", "hi-1"], ["show", "--card", "c-1", "--json"], ["list"], ["list", "--json"],
    ["list", "--patient", "pat-1"], ["stats"], ["stats", "--json"],
]
IDS = [" ".join(c).replace("{tmp}/", "") for c in READ_COMMANDS]


def _argv(cmd: list[str], tmp_path) -> list[str]:
    return [a.replace("{tmp}", str(tmp_path)) for a in cmd]


def _tree(path) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, dirs, files in os.walk(path)
                  for f in files + dirs)


@pytest.fixture
def empty_var(tmp_path, monkeypatch):
    """A fresh working directory with PACECDS_VAR_DIR an empty directory, nothing else configured."""
    work = tmp_path / "work"
    var = work / "var"
    var.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("PACECDS_VAR_DIR", str(var))
    monkeypatch.delenv("PACECDS_DATABASE_URL", raising=False)
    monkeypatch.delenv("PACECDS_AUDIT_KEY", raising=False)
    return var


@pytest.mark.parametrize("cmd", READ_COMMANDS, ids=IDS)
def test_read_command_refuses_to_create_a_store(empty_var, tmp_path, capsys, cmd):
    before = _tree(tmp_path)
    rc = pacecds_main(["audit", *_argv(cmd, tmp_path)])
    out, err = capsys.readouterr()
    db = (empty_var / "pacecds-audit.db").resolve()
    assert rc == 2 and out == ""
    assert err == (f"pacecds audit {cmd[0]}: no decision log at {db} "
                   "(PACECDS_DATABASE_URL is not set; the service creates it on first start)\n")
    assert os.listdir(empty_var) == [] and _tree(tmp_path) == before   # no file, no key, no export


def test_var_dir_is_not_created_and_database_url_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PACECDS_VAR_DIR", str(tmp_path / "not-yet"))
    monkeypatch.delenv("PACECDS_DATABASE_URL", raising=False)
    monkeypatch.delenv("PACECDS_AUDIT_KEY", raising=False)
    rc, _, err = run(capsys, "audit", "stats")
    assert rc == 2 and "no decision log at" in err and not (tmp_path / "not-yet").exists()
    db = tmp_path / "elsewhere" / "log.db"
    rc, _, err = run(capsys, "audit", "--database-url", f"sqlite:///{db}", "verify")
    assert rc == 2 and err == (f"pacecds audit verify: no decision log at {db} "
                               "(from --database-url; the service creates it on first start)\n")
    monkeypatch.setenv("PACECDS_DATABASE_URL", f"sqlite:///{db}")
    rc, _, err = run(capsys, "audit", "list")
    assert rc == 2 and f"no decision log at {db} (from PACECDS_DATABASE_URL;" in err
    assert _tree(tmp_path) == []


def test_an_empty_sqlite_file_is_not_turned_into_a_store(tmp_path, monkeypatch, capsys):
    db = tmp_path / "empty.db"
    db.touch()
    monkeypatch.setenv("PACECDS_DATABASE_URL", f"sqlite:///{db}")
    rc, _, err = run(capsys, "audit", "verify")
    assert rc == 2 and f"no decision log in {db} (the file is empty)" in err
    assert db.stat().st_size == 0 and _tree(tmp_path) == ["empty.db"]


def _cli_url(url: str, schema: str | None) -> str:
    """The store as a CLI names it: a PostgreSQL schema through the connection's search_path."""
    if schema is None:
        return url
    return sa.engine.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}) \
        .render_as_string(hide_password=False)


def _tables(url: str, schema: str | None) -> set[str]:
    if schema is None:
        return set()
    eng = sa.create_engine(url)
    try:
        with eng.connect() as conn:
            return set(sa.inspect(conn).get_table_names(schema=schema)) if sa.inspect(conn).has_schema(schema) \
                else set()
    finally:
        eng.dispose()


def test_no_tables_no_store_on_either_backend(store_url, tmp_path, capsys):
    url, schema = store_url
    cli = _cli_url(url, schema)
    for cmd in (["verify", "--json"], ["stats"], ["list"], ["show", "x"], ["export"]):
        rc, out, err = run(capsys, "audit", "--database-url", cli, *cmd)
        assert rc == 2 and out == "" and len(err.splitlines()) == 1, err
        if schema is None:
            assert f"no decision log at {tmp_path}/audit.db (from --database-url;" in err
        else:
            assert f"no decision log in {describe_url(cli)}: it has no table audit_record" in err
    assert not (tmp_path / "audit.db").exists() and _tables(url, schema) == set()


def test_read_commands_name_the_store_they_read(store_url, tmp_path, capsys, monkeypatch):
    url, schema = store_url
    monkeypatch.setenv("PACECDS_AUDIT_KEY", AUDIT_KEY.decode())
    s = AuditStore.from_config(url, schema=schema, key=AUDIT_KEY)
    rec = decision("named-1")
    s.record_evaluation(rec)
    s.close()
    cli = _cli_url(url, schema)
    where = f"{tmp_path}/audit.db" if schema is None else describe_url(cli)
    for cmd in READ_COMMANDS:
        argv = _argv(cmd, tmp_path)
        argv = [rec["cards"][0]["uuid"] if a == "c-1" else "named-1" if a == "hi-1" else a for a in argv]
        rc, out, err = run(capsys, "audit", "--database-url", cli, *argv)
        assert rc == 0, (cmd, err)
        assert err.splitlines()[0] == f"pacecds audit {cmd[0]}: reading the decision log at {where} " \
                                      "(from --database-url)"
        if "--json" in cmd:
            json.loads(out)   # the name goes to standard error: JSON stays JSON
    rc, out, err = run(capsys, "audit", "--database-url", cli, "list", "--patient", "pat-1", "--json")
    assert [d["hookInstance"] for d in json.loads(out)] == ["named-1"]


def test_postgresql_password_is_masked(pg_database_url, capsys):
    u = sa.engine.make_url(pg_database_url)
    secret = u.password or "not-for-your-eyes"
    u = u.set(password=secret)  # a server that trusts local connections ignores it
    AuditStore.from_config(u.render_as_string(hide_password=False), key=AUDIT_KEY).close()
    rc, _, err = run(capsys, "audit", "--database-url", u.render_as_string(hide_password=False), "verify")
    assert rc == 0 and secret not in err
    assert f"reading the decision log at {u.render_as_string(hide_password=True)} " in err and ":***@" in err


def test_describe_url_masks_passwords():
    assert describe_url("postgresql+psycopg://ann:pa55@db.example.org:5432/cds") == \
        "postgresql+psycopg://ann:***@db.example.org:5432/cds"
    masked = describe_url("postgresql+psycopg://db.example.org/cds?user=ann&password=pa55")
    assert "pa55" not in masked and "password=***" in masked
    assert describe_url("sqlite:////srv/pacecds/var/pacecds-audit.db") == "/srv/pacecds/var/pacecds-audit.db"


def test_list_by_patient_never_creates_the_audit_key(tmp_path, monkeypatch, capsys):
    var = tmp_path / "var"
    var.mkdir()
    monkeypatch.setenv("PACECDS_VAR_DIR", str(var))
    monkeypatch.setenv("PACECDS_DATABASE_URL", f"sqlite:///{tmp_path}/log.db")
    monkeypatch.delenv("PACECDS_AUDIT_KEY", raising=False)
    s = AuditStore.from_config(key=AUDIT_KEY)   # the service ran with a key given in its environment
    s.record_evaluation(decision("k-1"))
    s.close()
    rc, out, err = run(capsys, "audit", "list", "--patient", "pat-1")
    assert rc == 2 and out == ""
    assert f"pacecds audit list: no audit key at {var / 'pacecds-audit.key'} (PACECDS_AUDIT_KEY is not set)" in err
    assert os.listdir(var) == []
    rc, out, _ = run(capsys, "audit", "list")   # without --patient no key is needed
    assert rc == 0 and "k-1" in out and os.listdir(var) == []


def test_audit_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        pacecds_main(["audit", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert "{verify,export,show,list,stats}" in out
    lines = out.splitlines()
    for name in ("verify", "export", "show", "list", "stats"):
        line = next((ln for ln in lines if ln.split()[:1] == [name]), None)
        assert line is not None and len(line.split()) > 1, f"no one-line help for {name}: {out}"
