"""Tickers and stock-directory attributes for synthetic days.

The first symbols are real, well-known NASDAQ/NYSE tickers (so a replay summary reads like a real
day); past those, deterministic made-up 2-5 letter tickers. Locate codes are assigned in alphabetical
order of the tickers, from 1, as NASDAQ assigns them.
"""
from __future__ import annotations

import random
import string

REAL_TICKERS = (
    "AAPL MSFT NVDA AMZN GOOGL GOOG META TSLA AVGO COST NFLX AMD PEP ADBE CSCO TMUS INTC QCOM TXN "
    "INTU AMGN AMAT HON ISRG BKNG SBUX VRTX GILD ADI MDLZ REGN ADP LRCX PANW MU SNPS KLAC CDNS MELI "
    "PYPL ASML MAR ABNB ORLY CTAS MNST CSX WDAY FTNT NXPI PCAR ROST CPRT KDP DXCM AEP PAYX ODFL "
    "MRVL CHTR IDXX FAST EA GEHC KHC CTSH VRSK EXC XEL BKR TTD CSGP ON LULU DDOG TEAM ZS FANG ANSS "
    "CDW BIIB ILMN WBD MRNA DLTR SIRI SPY QQQ IWM TLT GLD XLF SOFI PLTR RIVN LCID HOOD COIN"
).split()

# (market category, weight): NASDAQ Global Select / Global / Capital Market, NYSE, NYSE American,
# NYSE Arca, Cboe BZX (ITCH's R message lists every US-listed security, not only NASDAQ's).
MARKET_CATEGORIES = (("Q", 0.40), ("G", 0.15), ("S", 0.15), ("N", 0.18), ("A", 0.03), ("P", 0.06), ("Z", 0.03))
ETF_TICKERS = {"SPY", "QQQ", "IWM", "TLT", "GLD", "XLF"}


def make_tickers(n: int, rng: random.Random) -> list[str]:
    """n unique tickers: the real ones first, then made-up ones; returned in locate (alphabetical) order."""
    if n < 0:
        raise ValueError("the number of symbols must be >= 0")
    out = list(REAL_TICKERS[:n])
    seen = set(out)
    letters = string.ascii_uppercase
    while len(out) < n:
        k = rng.choices((2, 3, 4, 5), weights=(0.05, 0.35, 0.5, 0.1))[0]
        t = "".join(rng.choice(letters) for _ in range(k))
        if t not in seen:
            seen.add(t)
            out.append(t)
    return sorted(out)


def directory_fields(ticker: str, rank: int, rng: random.Random) -> dict:
    """Stock directory (ITCH R) fields for a ticker; rank 0 is the busiest symbol."""
    cats, weights = zip(*MARKET_CATEGORIES)
    cat = "Q" if ticker in REAL_TICKERS[:40] else rng.choices(cats, weights=weights)[0]
    etf = ticker in ETF_TICKERS or rng.random() < 0.03
    nasdaq = cat in "QGS"
    return dict(
        stock=ticker,
        market_category=cat,
        financial_status_indicator="N" if nasdaq else " ",
        round_lot_size=100,
        round_lots_only="N",
        issue_classification="Q" if etf else "C",
        issue_sub_type="E " if etf else "Z ",
        authenticity="P",
        short_sale_threshold_indicator="N" if nasdaq else " ",
        ipo_flag="N" if nasdaq else " ",
        luld_reference_price_tier="1" if rank < 200 or etf else "2",
        etp_flag="Y" if etf else "N",
        etp_leverage_factor=0,
        inverse_indicator="N",
    )


MPIDS = ("NITE", "CDRG", "GSCO", "MSCO", "VIRT", "JPMS", "UBSS", "SUSQ", "HRTF", "JSTX", "TMBR", "CITD")
