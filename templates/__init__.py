"""Canonical chat templates written for templatekit; installed as the package data of ``templatekit.canonical``."""
