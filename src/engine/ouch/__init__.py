"""OUCH 4.2 over SoupBinTCP order entry (acceptor side)."""
