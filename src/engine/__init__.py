"""engine: order books, matching engine and the exchange side of feedhandler."""
