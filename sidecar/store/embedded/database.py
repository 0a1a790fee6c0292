"""The embedded store's SQLite file with every capability's statements."""

from __future__ import annotations

from sidecar.store.embedded.budgets import BudgetRows
from sidecar.store.embedded.fleet import FleetRows
from sidecar.store.embedded.jobs import JobRows
from sidecar.store.embedded.logs import LogRows
from sidecar.store.embedded.records import RecordRows
from sidecar.store.embedded.write_behind import HotRows


class Database(HotRows, RecordRows, JobRows, LogRows, FleetRows, BudgetRows):
    """The file (`sqlite.SQLite`); every method runs on the one writer thread."""
