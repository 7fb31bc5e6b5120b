"""Platform-free core of the chat bot: settings, engine, store, completions client, streaming."""
