"""Guide import path for `workshop.core` (re-exports only)."""
