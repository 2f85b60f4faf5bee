"""Tests of the execution backends (SPEC section 13)."""
