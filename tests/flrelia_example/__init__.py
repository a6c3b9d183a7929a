"""The worked example of docs/targets.md (the page quotes these files verbatim)."""
