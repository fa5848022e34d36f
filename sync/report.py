"""The sync run's summary (returned by the flow, shown as artifacts)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class SyncSummary(BaseModel):
    """What one sync run saw and did. Times are aware UTC; no secrets."""

    run_id: str
    mode: str
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None = None
    links: int = 0
    candidates: int = 0
    unchanged: int = 0
    agreed: int = 0
    planned: dict[str, int] = Field(default_factory=dict)
    applied: int = 0
    failed: int = 0
    conflicts: int = 0
    deferred: int = 0
    invalid: int = 0
    api_calls: dict[str, int] = Field(default_factory=dict)
    token_refreshed: bool = False
    changes: list[dict[str, Any]] = Field(default_factory=list)
    failures: list[dict[str, Any]] = Field(default_factory=list)
    conflict_list: list[dict[str, Any]] = Field(default_factory=list)

    def markdown(self) -> str:
        """The run as a markdown summary."""
        planned = ", ".join(f"{k} {v}" for k, v in sorted(self.planned.items())) or "nothing"
        calls = ", ".join(f"{k} {v}" for k, v in sorted(self.api_calls.items())) or "none"
        return (
            f"## Appointment sync ({self.mode}{', dry run' if self.dry_run else ''})\n\n"
            f"| | |\n|---|---|\n| linked appointments | {self.links} |\n| unchanged | {self.unchanged} |\n"
            f"| agreed (base updated, nothing sent) | {self.agreed} |\n| planned | {planned} |\n| applied | {self.applied} |\n"
            f"| failed (retried next run) | {self.failed} |\n| conflicts | {self.conflicts} |\n| deferred | {self.deferred} |\n"
            f"| invalid records skipped | {self.invalid} |\n| API calls | {calls} |\n| token refreshed | {self.token_refreshed} |\n"
        )
