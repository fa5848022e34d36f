"""Prefect Blocks: :class:`ZohoOAuth` (the shared token store of every process).

Register the block types with ``prefect block register -m blocks``.
"""

from .zoho_oauth import ZohoOAuth

__all__ = ["ZohoOAuth"]

from .sync_config import AppointmentSyncConfig  # noqa: E402

__all__ += ["AppointmentSyncConfig"]

from .notification_channel import NotificationChannel  # noqa: E402

__all__ += ["NotificationChannel"]
