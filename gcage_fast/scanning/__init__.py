"""The scan: its three steps over one plan shard (:mod:`gcage_fast.scanning.stages`), the local runner that wires
them (:mod:`gcage_fast.scanning.local`), and the set-up and summary every runner shares.

``scan(ScanConfig(...))`` runs or resumes a scan into an output directory and returns a :class:`ScanSummary`;
``progress`` is called with a :class:`ScanProgress` as it goes. The public name is ``gcage_fast.scan``.
"""

from gcage_fast.scanning.local import scan
from gcage_fast.scanning.summary import ScanProgress, ScanSummary

__all__ = ["scan", "ScanProgress", "ScanSummary"]
