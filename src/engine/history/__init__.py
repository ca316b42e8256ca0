"""History of the exchange in a database: what the journal sequenced, stored off the hot path.

``writer`` follows the journal files and stores batches exactly once (resuming from the stored sequence);
``rows`` turns engine events into rows; ``sqlite`` (default, ``<data dir>/history.sqlite``) and ``postgres``
(``--db postgresql://...``, psycopg 3, COPY) store them; ``schema`` applies ``migrations/NNNN_*.sql`` in
order; ``service`` runs the writer as the exchange's child process and as ``feedhandler history``.
"""
from engine.history.rows import COLUMNS, Rows
from engine.history.writer import HistoryWriter, JournalSource, open_store

__all__ = ["COLUMNS", "HistoryWriter", "JournalSource", "Rows", "open_store"]
