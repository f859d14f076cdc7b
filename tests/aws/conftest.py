"""Every test here runs under AWS's rules (tests/aws_rules.py): what AWS refuses is refused, and
every Query, Scan, GetRecords and ListSchedules answers a few items a page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.aws_rules import AwsRules, enforced


@pytest.fixture(autouse=True)
def aws_rules() -> Iterator[AwsRules]:
    with enforced(AwsRules()) as rules:
        yield rules
