"""Features: the offline feature tables (computed from the canonical data), the
Feast store that serves them, training sets and event ingestion.

The Feast definitions live in ``feature_repo/``; this package holds the logic they
and the pipelines share (pipelines may not import ``feature_repo``).
"""
