"""Test-only: the `yr` package of openYuanrong, holding only `yr.datasystem` (te's compat module)."""
