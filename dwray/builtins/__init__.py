"""dwray's own plugins, registered as entry points like any third-party plugin.

Each adapts a core service or a backend to the plugin contract and runs in a
plugin host actor; none holds Ray code."""
