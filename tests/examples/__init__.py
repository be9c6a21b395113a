"""Tests of the example schemas that ship with the project."""
