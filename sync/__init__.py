"""The sync engine: the state store, the three-way diff, CRM module adapters, the run summary.
No Prefect, no HTTP.

* :mod:`sync.settings`: ``APPT_SYNC_*`` settings (data dir, state store URL, work dir).
* :mod:`sync.tables`: every table of the state store; :mod:`sync.migrations`: its schema (Alembic).
* :mod:`sync.store`: engines, :func:`~sync.store.open_store` (schema upgraded), shared upserts.
* :mod:`sync.links`: the sync's queries (both sides, the diff's candidates, base, action log).
* :mod:`sync.bulk_runs`, :mod:`sync.bulk_load`: Bulk Read bookkeeping and the result-file loader.
* :mod:`sync.engine`: the three-way diff (pure).
* :mod:`sync.modules`: CRM module adapters (``Appointments__s``); :mod:`sync.bookings`: the Bookings side.
* :mod:`sync.outcomes`: what became of each write, recorded in the store.
* :mod:`sync.report`: the run summary and its artifacts' rows.
* :mod:`sync.budget`: the daily Zoho API budget's arithmetic (pure); :mod:`sync.usage`: its
  rows (calls spent per family and day, reads waiting, alerts sent).
* :mod:`sync.echoes`: whether a Bookings webhook only repeats what the store holds.
"""
