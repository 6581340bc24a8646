"""The change feed (events.py, repository.py) and its delivery to webhooks (webhooks/)."""
