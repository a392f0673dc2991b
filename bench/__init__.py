"""`make bench`: the batch endpoint side by side with bare SQL (see docs/PERFORMANCE.md)."""
