"""pytest plugin placeholder (filled by the plugin issue)."""
