"""Source adapters: each turns one dataset layout into `CXRRecord`s plus a list of what it skipped."""
