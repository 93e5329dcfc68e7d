"""The services of ``tests.stack`` as one plugin of the test session, registered by the first conftest that needs
them (integration or e2e), so that its session fixtures exist once.

Imported into two conftests, the fixtures would be two sets of session fixtures: a session running both
directories then started a second in-process worker and a second runtime beside the first (two flushers, two
refreshers, the first runtime closed under the first worker), and tests after the e2e ones timed out at random.
Unit tests never import it: ``tests.stack`` starts a Redis when imported.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    from tests import stack

    if not config.pluginmanager.is_registered(stack):
        config.pluginmanager.register(stack, "tests.stack")
