"""The report's figures as array code: charts (matplotlib, inline SVG). Imports `core` only.
"""
