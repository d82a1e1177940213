"""The core: pure logic with no Ray. Frames, pipeline, keyring, catalog, identity store,
supervision rules, rate limits, models, names, contracts and the warehouse."""
