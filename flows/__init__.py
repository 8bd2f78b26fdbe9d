"""Prefect flows over the stages. Importing this package turns Prefect's analytics off."""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
