"""Static and behavioural linting of chat templates."""
