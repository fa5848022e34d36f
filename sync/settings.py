"""The project's settings from the environment: one :class:`AppSettings`, prefix ``APPT_SYNC_``.

No Prefect here (the deployments and the webhook receiver read the same class), only
pydantic-settings. Values are read when an :class:`AppSettings` is made, so a change
of the environment is seen by the next one; an empty variable counts as unset.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AppSettings(BaseSettings):
    """Where the project keeps its files and its state store.

    * ``APPT_SYNC_DATA_DIR`` (``data_dir``): the folder of the default SQLite state
      store; default ``.data`` under the current directory.
    * ``APPT_SYNC_STATE_STORE_URL`` (``state_store_url``): a SQLAlchemy URL of the
      state store (``sqlite:///...``, ``postgresql+psycopg://...``); default
      ``sqlite:///<data_dir>/state.db``. An ``AppointmentSyncConfig`` block's own
      ``state_store_url`` wins over it.
    * ``APPT_SYNC_WORK_DIR`` (``work_dir``): where Bulk Read downloads are kept
      until loaded; default the system's temporary folder.

    Other ``APPT_SYNC_*`` variables (the receiver's ``APPT_SYNC_RECEIVER_*``,
    ``APPT_SYNC_HOME``) are not this class's and are ignored.
    """

    model_config = SettingsConfigDict(env_prefix="APPT_SYNC_", env_ignore_empty=True, extra="ignore")

    data_dir: Path = Field(default_factory=lambda: Path.cwd() / ".data")
    state_store_url: str | None = None
    work_dir: Path | None = None

    def store_url(self) -> str:
        """The state store's URL: ``state_store_url``, else ``sqlite:///<data_dir>/state.db``."""
        return self.state_store_url or f"sqlite:///{self.data_dir / 'state.db'}"

    def bulk_work_dir(self) -> Path:
        """The folder Bulk Read downloads go under: ``work_dir``, else the system's temporary folder."""
        return self.work_dir or Path(tempfile.gettempdir())
