"""Entry points: the ``appt-sync`` command line, the demo, and (later) ``prefect.yaml``,
the ``serve`` entrypoint and the webhook receiver."""
