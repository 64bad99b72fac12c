"""Presenting results: tables and exports, the HTML report, the integrations other tools read."""
