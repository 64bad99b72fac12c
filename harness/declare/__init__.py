"""Declaring suites: the Suite base class, variants, metrics, profiles, and discovery of suite files."""
