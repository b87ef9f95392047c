"""Fixtures of the scale-out tests: a real RabbitMQ broker, started once per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from peers import running_under_ci
from scaleout_helpers import RabbitMQServer, rabbitmq_missing_reason, start_rabbitmq


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitMQServer]:
    """A throw-away RabbitMQ broker on free loopback ports (boot takes ~8 s).

    Skips when the Debian package is not installed (fails under ``CI=true``).
    """
    reason = rabbitmq_missing_reason()
    if reason is not None:
        if running_under_ci():
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    server = start_rabbitmq()
    yield server
    server.stop()
