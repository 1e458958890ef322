"""tui: the Textual front end (`zoo tui`): browse the catalog, its tensors, lineage and runs,
and tag, compare, verify, export or push models. `tui.app.ZooApp` is the app; all data
comes from the core API through `tui.data`."""
