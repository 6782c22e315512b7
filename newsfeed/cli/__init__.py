"""The `newsfeed` command line. Command groups import their heavy libraries lazily."""
