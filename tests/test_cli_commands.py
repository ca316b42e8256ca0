"""The CLI hands exchange/bot/run/doctor over to their modules with the arguments untouched."""
import pytest

from feedhandler import cli


@pytest.mark.parametrize("command", ["exchange", "bot", "shard-server"])
def test_delegated_help(command, capsys):
    assert cli.main([command, "--help"]) == 0        # the exit code is returned, as for every subcommand
    out = capsys.readouterr().out
    assert out.startswith(f"usage: feedhandler {command}") and "Exit codes" in out


def test_unknown_delegate_target_is_a_clean_error(monkeypatch, capsys):
    monkeypatch.setitem(cli.DELEGATED, "nothing", ("feedhandler.no_such_module:main", "x"))
    assert cli.main(["nothing"]) == 2
    assert "not available" in capsys.readouterr().err


def test_bot_trades_against_an_in_process_exchange(capsys):
    pytest.importorskip("zmq")
    import json

    rc = cli.main(["bot", "--start-exchange", "--duration", "2", "--json", "--quiet"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)  # --json: stdout is one JSON document
    assert summary["orders"] > 0 and summary["rejects"] == 0
    assert summary["fills"]["mm"] == summary["fills"]["taker"] > 0
