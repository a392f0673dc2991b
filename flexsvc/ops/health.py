"""Readiness: is every configured database reachable right now?"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from flexsvc.config import Settings
from flexsvc.data.db import Pools, ping


def check_databases(pools: Pools, settings: Settings, timeout: float = 3.0) -> dict[str, bool]:
    """{database name: reachable?}, probing all databases at once so the answer stays fast."""
    names = sorted(settings.databases)
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(names))) as executor:
        results = executor.map(lambda name: ping(pools, name, timeout), names)
        return dict(zip(names, results, strict=False))
