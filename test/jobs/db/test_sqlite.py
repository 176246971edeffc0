"""The SQLite backend opened by many connections at once on a brand-new file."""

from __future__ import annotations

import threading

from harli_sgl.jobs.db.sqlite import SqliteDatabase


def test_many_connections_opening_one_new_file_together_all_get_wal(tmp_path):
    # Switching a new file to WAL can fail at once with "database is locked" when another
    # connection holds the file's lock at that instant (the busy handler is not called
    # there); without the retry this race failed about one trial in fifty (300 trials of
    # six connections: 6 failures), so 300 trials catch it nearly always. 4 s on 2 cores.
    failures: list[BaseException] = []
    for trial in range(300):
        path = str(tmp_path / f"{trial}.db")
        barrier = threading.Barrier(6)
        opened: list[SqliteDatabase] = []

        def open_db() -> None:
            barrier.wait()
            try:
                db = SqliteDatabase(path)
                opened.append(db)
                with db.migration() as tx:
                    tx.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
            except BaseException as e:  # reported below
                failures.append(e)

        threads = [threading.Thread(target=open_db) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for db in opened:
            with db.read() as tx:
                assert tx.one("PRAGMA journal_mode")[0] == "wal"
            db.close()
        assert not failures, (trial, failures)
