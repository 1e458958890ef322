"""merging: operator package (see ARCHITECTURE.md); filled in by its issue."""
