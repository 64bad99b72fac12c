"""Judging two result sets: statistics, pairing of cases, verdicts."""
