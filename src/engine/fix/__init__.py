"""FIX 4.2/4.4 order entry (acceptor side): session layer, message store, acceptor."""
