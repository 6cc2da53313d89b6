"""Who a run, a record, a metric series, a cgroup or a wire message belongs to.

The run id and the tenant name go into every record and metric tag; on the wire a
message carries the tenant as a 32-bit key (CRC-32 of the name), next to its client id,
so a shard can refuse traffic that is not its tenant's.
"""

from __future__ import annotations

import os
import time
import zlib
from dataclasses import dataclass


def tenant_key(tenant: str) -> int:
    """The 32-bit key a tenant's wire messages carry: ``zlib.crc32`` of its name."""
    return zlib.crc32(tenant.encode("utf-8"))


def new_run_id(prefix: str) -> str:
    """``<prefix>-YYYYmmdd-HHMMSS-<4 hex>``: sortable by start time, unique in practice."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}"


@dataclass(frozen=True)
class Identity:
    """Args:
    run: the run id.
    tenant: the tenant's name.
    """

    run: str
    tenant: str

    @property
    def tenant_key(self) -> int:
        return tenant_key(self.tenant)

    def cgroup_name(self, what: str) -> str:
        """A cgroup directory name for one of this run's processes."""
        return f"{self.tenant}.{self.run}.{what}"
