"""The data layer: connection pools, named SQL from ``sql/queries/``, migrations, and the
transactions that apply batches and single records. Knows nothing of HTTP.
"""
