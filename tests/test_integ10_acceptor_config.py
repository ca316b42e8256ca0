"""The FIX/OUCH acceptors from the exchange's config (issue 10): the session stores follow the journal's
fsync policy (a stored message must survive what the journal survives, else its MsgSeqNum is reused), and
every documented acceptor limit is a key of [fix] / [ouch] that reaches the acceptor."""
from __future__ import annotations

from pathlib import Path

import pytest

from engine.exchange import ConfigError, Exchange, load_config

SPEC = Path(__file__).resolve().parents[2] / "shared" / "data" / "fix" / "spec"
pytestmark = pytest.mark.skipif(not SPEC.is_dir(), reason=f"{SPEC} (shared reference data) not present")


def _cfg(tmp_path, toml: str, **over):
    p = tmp_path / "x.toml"
    p.write_text(toml.replace("SPEC", str(SPEC)))
    return load_config(str(p), {"data_dir": str(tmp_path / "data"), "gateway.endpoint": "tcp://127.0.0.1:*",
                                "marketdata.endpoint": "tcp://127.0.0.1:*", **over})


FIX = ('[fix]\nport = 0\nspec_dir = "SPEC"\n'
       'sessions = [{begin_string = "FIX.4.4", our_comp_id = "EXCH", their_comp_id = "C1", account = "A1"}]\n')


@pytest.mark.parametrize("policy,want", [("batch", True), ("every", True), ("interval", True), ("none", False)])
def test_fix_store_follows_the_journal_fsync_policy(tmp_path, policy, want):
    cfg = _cfg(tmp_path, FIX, **{"engine.fsync": policy})
    with Exchange(cfg) as ex:
        stores = [s.store for s in ex.fix.sessions.values()]
        assert stores and all(st.fsync is want for st in stores), (policy, [st.fsync for st in stores])


def test_fix_fsync_key_overrides_the_journal_policy(tmp_path):
    cfg = _cfg(tmp_path, FIX + "fsync = false\n", **{"engine.fsync": "every"})
    with Exchange(cfg) as ex:
        assert all(s.store.fsync is False for s in ex.fix.sessions.values())


def test_every_acceptor_limit_is_a_config_key_that_reaches_the_acceptor(tmp_path):
    toml = (FIX + "logon_timeout_s = 1.5\nmax_prelogon_bytes = 1234\nmax_message_bytes = 5678\n"
                  "max_clordid_bytes = 12\nreset_on_logon = true\n"
            '[ouch]\nport = 0\nusers = {u1 = {password = "pw", account = "O1"}}\n'
            "login_timeout_s = 2.5\nmax_packet_bytes = 333\n")
    cfg = _cfg(tmp_path, toml)
    with Exchange(cfg) as ex:
        fix, ouch = ex.fix, ex.ouch
        assert fix.logon_timeout_s == 1.5 and fix.max_prelogon_bytes == 1234
        s = next(iter(fix.sessions.values()))
        assert s.max_message_bytes == 5678 and s.reset_on_logon is True
        assert fix.app.max_clordid_bytes == 12
        assert ouch.login_timeout_s == 2.5 and ouch.max_packet_bytes == 333


def test_clordid_limit_from_config_refuses_a_longer_id():
    from engine.fix.order_app import OrderApplication, RequestRefused
    app = OrderApplication(None, {}, max_clordid_bytes=4)
    app._check_id(b"ABCD", 11)
    with pytest.raises(RequestRefused, match="longer than 4 bytes"):
        app._check_id(b"ABCDE", 11)


def test_misspelled_acceptor_limit_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="max_clordid_bytes"):
        _cfg(tmp_path, FIX + "max_clordid_byte = 12\n")
