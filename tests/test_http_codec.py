"""engine.http.codec: exact decimal conversions, identifiers, reject codes."""
import pytest

from engine.http import codec
from engine.http.codec import ApiError


@pytest.mark.parametrize("s,raw", [("101.25", 101_250_000_000), ("0.000000001", 1), ("5", 5_000_000_000),
                                   ("7.100000000000", 7_100_000_000)])
def test_price_exact(s, raw):
    assert codec.parse_price(s) == raw
    assert codec.parse_price(codec.price_str(raw)) == raw


@pytest.mark.parametrize("bad", ["0.0000000001", "1e3", "-1", "0", "1.", ".5", " 1", "1,5", "NaN", 101.25, 100,
                                 True, None, "00.1", "1" * 30])
def test_price_inexact_or_malformed_is_invalid_parameter(bad):
    with pytest.raises(ApiError) as e:
        codec.parse_price(bad)
    assert e.value.code == "INVALID_PARAMETER"


def test_qty_whole_units_only():
    assert codec.parse_qty("10") == 10 and codec.parse_qty("10.000") == 10
    for bad in ("10.5", "0", 10, "2147483648", "1e2", "true"):
        with pytest.raises(ApiError) as e:
            codec.parse_qty(bad)
        assert e.value.code == "INVALID_PARAMETER"


def test_identifiers_refuse_metacharacters():
    assert codec.ident("abc-1.2:x_y", "cid") == "abc-1.2:x_y"
    for bad in ("x'; DROP TABLE orders;--", 'a"b', "a b", "", "x" * 65, 5, "é"):
        with pytest.raises(ApiError):
            codec.ident(bad, "cid")


def test_order_id_strings_only():
    assert codec.order_id("1099511627777") == 1099511627777
    for bad in (1099511627777, "-1", "0", "1 OR 1=1", "9" * 21):
        with pytest.raises(ApiError):
            codec.order_id(bad)


def test_reject_codes_screaming_snake():
    assert codec.reject_code("max_qty") == "MAX_QTY"
    assert codec.reject_code("post-only would cross") == "POST_ONLY_WOULD_CROSS"
